"""Filters: globs, subjects, and clear errors for what matches nothing."""

from __future__ import annotations

import pytest

from common.errors import ValidationError
from controller.subscription import Subscription


def test_everything_by_default() -> None:
    sub = Subscription.parse()
    assert sub.everything
    assert sub.matches("node.status.changed", "pi-1", None, None)


def test_globs_and_exact_types() -> None:
    sub = Subscription.parse(types="gpio.*,node.status.changed")
    assert sub.matches("gpio.state.changed", None, None, "led-1")
    assert sub.matches("gpio.resource.changed", None, None, "led-1")
    assert sub.matches("node.status.changed", "pi-1", None, None)
    assert not sub.matches("node.discovered", "pi-1", None, None)


def test_subject_filters_combine() -> None:
    sub = Subscription.parse(node="pi-1,pi-2", resource=["led-1"])
    assert sub.matches("gpio.state.changed", "pi-1", None, "led-1")
    assert not sub.matches("gpio.state.changed", "pi-3", None, "led-1")
    assert not sub.matches("gpio.state.changed", "pi-1", None, "led-2")


def test_equal_filters_share_a_group() -> None:
    assert Subscription.parse(types="gpio.*", node="a") == Subscription.parse(
        types=["gpio.*"], node="a")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"types": "gpio.nope"}, "types"),
    ({"types": "zzz.*"}, "types"),
    ({"types": "GPIO;DROP"}, "types"),
    ({"node": 5}, "node"),
])
def test_invalid_filters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Subscription.parse(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
