"""What docs/websocket.md promises of each event type is what the server sends: every data
field it lists is present (null or empty when unknown), the subject keys are at the top
level, and whole numbers are integers as in the seed's examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common import events

DOC = (Path(__file__).resolve().parents[2] / "docs" / "websocket.md").read_text()

# The least each event can be made with: every optional field left unknown.
MINIMAL: dict[str, events.Event] = {
    "node.discovered": events.node_discovered("pi-1", "192.168.1.50"),
    "node.status.changed": events.node_status_changed("pi-1", "ready"),
    "node.health.reported": events.node_health_reported("pi-1", {}),
    "node.removed": events.node_removed("pi-1"),
    "cluster.node.added": events.cluster_node_added("cluster-1", "pi-1"),
    "cluster.node.removed": events.cluster_node_removed("cluster-1", "pi-1"),
    "gpio.state.changed": events.gpio_state_changed("led-1", "pi-1", 18, "high"),
    "gpio.resource.changed": events.gpio_resource_changed("led-1", "pi-1", "created"),
    "system.log.created": events.system_log_created("warning", "disk 91 % full"),
    "job.step.changed": events.job_progress("job-1", "pi-1", "install", "running"),
}


def documented() -> dict[str, tuple[list[str], list[str]]]:
    """Event type -> (subject keys, data fields), from the event type table."""
    table = DOC.split("### Event types", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        # Values in parentheses (an action's choices) are not field names.
        names = [re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", c)) for c in cells[:3]]
        rows[names[0][0]] = (names[1], names[2])
    return rows


def test_the_table_covers_every_event_type() -> None:
    assert set(documented()) == set(events.EVENT_TYPES) == set(MINIMAL)


@pytest.mark.parametrize("event_type", sorted(MINIMAL))
def test_every_documented_field_is_sent_even_when_unknown(event_type: str) -> None:
    subjects, fields = documented()[event_type]
    sent = json.loads(events.to_json(MINIMAL[event_type]))
    assert set(fields) <= set(sent["data"]), set(fields) - set(sent["data"])
    for key in subjects:
        if sent["data"].get(key) is not None:
            assert sent[key] == sent["data"][key]


def test_a_whole_pwm_duty_is_an_integer_as_in_the_seed() -> None:
    sent = json.loads(events.to_json(events.gpio_state_changed("fan", "pi-1", 18, "high",
                                                               75.0)))
    assert sent["data"]["pwm_duty"] == 75 and isinstance(sent["data"]["pwm_duty"], int)
    half = json.loads(events.to_json(events.gpio_state_changed("fan", "pi-1", 18, "high",
                                                               12.5)))
    assert half["data"]["pwm_duty"] == 12.5
