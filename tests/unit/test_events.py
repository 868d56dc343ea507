"""The envelope and codec: every constructor round-trips, bad bytes give one clear error."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from common import events
from common.errors import DecodeError

ALL = [
    events.node_discovered("pi-new", "192.168.1.110", "pi-new", "mdns"),
    events.node_status_changed("pi-worker-01", "ready", "offline", "agent started"),
    events.node_health_reported("pi-1", {"cpu_temp_c": 51.2}),
    events.node_removed("pi-1", "forgotten by an operator", actor="admin"),
    events.cluster_node_added("cluster-1", "pi-worker-03", "192.168.1.103", "provisioning"),
    events.cluster_node_removed("cluster-1", "pi-worker-02"),
    events.gpio_state_changed("led-controller", "pi-1", 18, "high", 75, actor="ops",
                              request_id="r1"),
    events.gpio_resource_changed("led-1", "pi-1", "created", actor="ops"),
    events.system_log_created("error", "Failed to provision node", "provisioner"),
    events.job_progress("job-1", "pi-1", "preflight", "running", cluster_id="c1"),
]


@pytest.mark.parametrize("event", ALL, ids=lambda e: e.type)
def test_round_trip_through_the_stream(event: events.Event) -> None:
    decoded = events.decode(events.encode(event), "1736937015123-0")
    assert decoded.id == "1736937015123-0"
    assert msgspec.structs.replace(decoded, id=None) == event


def test_every_event_type_has_a_constructor_exercised_here() -> None:
    assert {e.type for e in ALL} == set(events.EVENT_TYPES)


def test_seed_example_gpio_state_changed_shape() -> None:
    event = events.gpio_state_changed("led-controller", "pi-1", 18, "high", 75)
    event.id = "1-0"
    body = json.loads(events.to_json(event))
    assert body["type"] == "gpio.state.changed"
    assert body["resource"] == "led-controller"
    assert body["data"]["pin"] == 18
    assert body["data"]["state"] == "high"
    assert body["data"]["pwm_duty"] == 75
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


def test_seed_example_cluster_node_added_shape() -> None:
    body = json.loads(events.to_json(events.cluster_node_added(
        "cluster-1", "pi-worker-03", "192.168.1.103", "provisioning")))
    assert body["cluster_id"] == "cluster-1"
    assert body["data"] == {"cluster_id": "cluster-1", "node_id": "pi-worker-03",
                            "ip_address": "192.168.1.103", "status": "provisioning"}


def test_id_is_not_stored_in_the_entry() -> None:
    event = events.node_status_changed("pi-1", "ready")
    event.id = "5-0"
    assert b"5-0" not in events.encode(event)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xc1not msgpack", "invalid envelope"),
    (msgspec.msgpack.encode({"timestamp": "t", "data": {}}), "invalid envelope"),
    (msgspec.msgpack.encode({"type": "no.such.type", "timestamp": "t", "data": {}}),
     "unknown event type"),
    (msgspec.msgpack.encode({"type": "gpio.state.changed", "timestamp": "t",
                             "data": {"resource": "x"}}), "invalid gpio.state.changed data"),
    (msgspec.msgpack.encode({"type": "node.status.changed", "timestamp": "t",
                             "data": {"node_id": 5, "status": "ready"}}),
     "invalid node.status.changed data"),
])
def test_bad_entries_raise_decode_error_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        events.decode(raw, "1-0")


def test_extra_data_fields_survive_decoding() -> None:
    event = events.gpio_state_changed("led-1", "pi-1", 18, "high")
    event.data["sent_ns"] = 123
    assert events.decode(events.encode(event), "1-0").data["sent_ns"] == 123
