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


def test_the_byte_prefilter_never_drops_an_entry_that_matches() -> None:
    from common import events as ev

    samples = [ev.gpio_state_changed("led-1", "pi-1", 18, "high"),
               ev.node_status_changed("pi-10", "ready"),
               ev.cluster_node_added("lab", "pi-2"),
               ev.system_log_created("warning", "hot", node_id="pi-1"),
               ev.node_discovered("pi-3", "10.0.0.3")]
    filters = [{}, {"types": "gpio.*"}, {"types": "node.status.changed"},
               {"node": "pi-1"}, {"cluster": "lab"}, {"resource": "led-1"},
               {"types": "node.*", "node": "pi-10,pi-3"}, {"types": "*.changed"}]
    for spec in filters:
        sub = Subscription.parse(**spec)
        for event in samples:
            raw = ev.encode(event)
            if sub.matches(event.type, event.node_id, event.cluster_id, event.resource):
                assert sub.may_match(raw), (spec, event.type)
    gpio_only = Subscription.parse(types="gpio.*")
    assert not gpio_only.may_match(ev.encode(ev.node_status_changed("pi-1", "ready")))
