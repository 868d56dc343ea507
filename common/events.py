"""The event envelope, one typed payload per event type, and the codec.

An event is the same object in Redis (msgpack, field ``e`` of a ``pic:events`` entry) and
on ``/ws`` (JSON)::

    {"id": "1736937015123-0", "type": "gpio.state.changed",
     "timestamp": "2025-01-15T10:30:15.123Z", "resource": "led-1", "node_id": "pi-1",
     "data": {"resource": "led-1", "node_id": "pi-1", "pin": 18, "state": "high", ...}}

``id`` is the stream entry id: it is not stored inside the entry, the reader sets it.
Subject keys (``node_id``, ``cluster_id``, ``resource``) stand at the top level so clients
and filters can route without opening ``data``; ``data`` carries every field of the type.

Schema evolution: new fields get defaults; a field's type never changes.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal

import msgspec

from common.errors import DecodeError

Level = Literal["debug", "info", "warning", "error", "critical"]


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    timestamp: str
    data: dict[str, Any]
    id: str | None = None
    node_id: str | None = None
    cluster_id: str | None = None
    resource: str | None = None


# --- payloads: one Struct per event type -------------------------------------------------


class Payload(msgspec.Struct, kw_only=True):
    """Every field is sent, null or empty when unknown: a client may read any field the
    docs list without checking that it is there."""


class NodeDiscovered(Payload):
    node_id: str
    ip_address: str
    hostname: str = ""
    source: str = ""


class NodeStatusChanged(Payload):
    node_id: str
    status: str
    previous_status: str | None = None
    reason: str = ""


class ClusterNodeChange(Payload):
    cluster_id: str
    node_id: str
    ip_address: str = ""
    status: str = ""


class GpioStateChanged(Payload):
    resource: str
    node_id: str
    pin: int
    state: str
    pwm_duty: int | float | None = None
    """A whole duty is an integer (75, as the seed shows it), not 75.0."""
    actor: str | None = None
    request_id: str | None = None
    reason: str | None = None


class SystemLogCreated(Payload):
    level: Level
    message: str
    source: str = ""
    node_id: str | None = None


class NodeRemoved(Payload):
    node_id: str
    reason: str = ""
    actor: str | None = None


class NodeHealthReported(Payload):
    node_id: str
    metrics: dict[str, Any]


class GpioResourceChanged(Payload):
    resource: str
    node_id: str
    action: Literal["created", "updated", "deleted"]
    actor: str | None = None
    request_id: str | None = None


class JobProgress(Payload):
    job_id: str
    node_id: str
    step: str
    status: str
    cluster_id: str | None = None
    message: str = ""


NODE_DISCOVERED: Final = "node.discovered"
NODE_STATUS_CHANGED: Final = "node.status.changed"
NODE_HEALTH_REPORTED: Final = "node.health.reported"
NODE_REMOVED: Final = "node.removed"
CLUSTER_NODE_ADDED: Final = "cluster.node.added"
CLUSTER_NODE_REMOVED: Final = "cluster.node.removed"
GPIO_STATE_CHANGED: Final = "gpio.state.changed"
GPIO_RESOURCE_CHANGED: Final = "gpio.resource.changed"
SYSTEM_LOG_CREATED: Final = "system.log.created"
JOB_PROGRESS: Final = "job.step.changed"

PAYLOADS: Final[dict[str, type[Payload]]] = {
    NODE_DISCOVERED: NodeDiscovered,
    NODE_STATUS_CHANGED: NodeStatusChanged,
    NODE_HEALTH_REPORTED: NodeHealthReported,
    NODE_REMOVED: NodeRemoved,
    CLUSTER_NODE_ADDED: ClusterNodeChange,
    CLUSTER_NODE_REMOVED: ClusterNodeChange,
    GPIO_STATE_CHANGED: GpioStateChanged,
    GPIO_RESOURCE_CHANGED: GpioResourceChanged,
    SYSTEM_LOG_CREATED: SystemLogCreated,
    JOB_PROGRESS: JobProgress,
}
"""Every event type the system emits, with the payload that validates it."""

EVENT_TYPES: Final = tuple(PAYLOADS)


def id_key(entry_id: str) -> tuple[int, int]:
    """An event id (a stream entry id, "ms-seq") as a sortable pair; ValueError if it is not
    one."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds and a ``Z``."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def make(type_: str, payload: Payload, *, timestamp: str | None = None) -> Event:
    """Wrap a payload in the envelope, lifting its subject keys to the top level."""
    data = msgspec.to_builtins(payload)
    return Event(
        type=type_,
        timestamp=timestamp or now_iso(),
        data=data,
        node_id=data.get("node_id"),
        cluster_id=data.get("cluster_id"),
        resource=data.get("resource"),
    )


# --- typed constructors, one per event type --------------------------------------------


def node_discovered(node_id: str, ip_address: str, hostname: str = "", source: str = "") -> Event:
    return make(NODE_DISCOVERED, NodeDiscovered(
        node_id=node_id, ip_address=ip_address, hostname=hostname, source=source))


def node_status_changed(
    node_id: str, status: str, previous_status: str | None = None, reason: str = ""
) -> Event:
    return make(NODE_STATUS_CHANGED, NodeStatusChanged(
        node_id=node_id, status=status, previous_status=previous_status, reason=reason))


def node_health_reported(node_id: str, metrics: dict[str, Any]) -> Event:
    return make(NODE_HEALTH_REPORTED, NodeHealthReported(node_id=node_id, metrics=metrics))


def node_removed(node_id: str, reason: str = "", actor: str | None = None) -> Event:
    return make(NODE_REMOVED, NodeRemoved(node_id=node_id, reason=reason, actor=actor))


def cluster_node_added(cluster_id: str, node_id: str, ip_address: str = "",
                       status: str = "") -> Event:
    return make(CLUSTER_NODE_ADDED, ClusterNodeChange(
        cluster_id=cluster_id, node_id=node_id, ip_address=ip_address, status=status))


def cluster_node_removed(cluster_id: str, node_id: str, ip_address: str = "",
                         status: str = "") -> Event:
    return make(CLUSTER_NODE_REMOVED, ClusterNodeChange(
        cluster_id=cluster_id, node_id=node_id, ip_address=ip_address, status=status))


def gpio_state_changed(
    resource: str,
    node_id: str,
    pin: int,
    state: str,
    pwm_duty: float | None = None,
    *,
    actor: str | None = None,
    request_id: str | None = None,
    reason: str | None = None,
) -> Event:
    if isinstance(pwm_duty, float) and pwm_duty.is_integer():
        pwm_duty = int(pwm_duty)
    return make(GPIO_STATE_CHANGED, GpioStateChanged(
        resource=resource, node_id=node_id, pin=pin, state=state, pwm_duty=pwm_duty,
        actor=actor, request_id=request_id, reason=reason))


def gpio_resource_changed(
    resource: str, node_id: str, action: Literal["created", "updated", "deleted"],
    *, actor: str | None = None, request_id: str | None = None,
) -> Event:
    return make(GPIO_RESOURCE_CHANGED, GpioResourceChanged(
        resource=resource, node_id=node_id, action=action, actor=actor, request_id=request_id))


def system_log_created(
    level: Level, message: str, source: str = "", node_id: str | None = None
) -> Event:
    return make(SYSTEM_LOG_CREATED, SystemLogCreated(
        level=level, message=message, source=source, node_id=node_id))


def job_progress(job_id: str, node_id: str, step: str, status: str, *,
                 cluster_id: str | None = None, message: str = "") -> Event:
    return make(JOB_PROGRESS, JobProgress(
        job_id=job_id, node_id=node_id, step=step, status=status, cluster_id=cluster_id,
        message=message))


# --- codec ------------------------------------------------------------------------------

_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder(Event)
_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """msgpack for the events stream; the id is the entry's, so it is not stored."""
    if event.id is not None:
        event = msgspec.structs.replace(event, id=None)
    return _msgpack_encoder.encode(event)


def decode(raw: bytes, entry_id: str) -> Event:
    """Decode and validate one stream entry. Raises DecodeError with the reason."""
    try:
        event = _msgpack_decoder.decode(raw)
    except msgspec.DecodeError as err:
        raise DecodeError(f"invalid envelope: {err}") from err
    payload_type = PAYLOADS.get(event.type)
    if payload_type is None:
        raise DecodeError(f"unknown event type {event.type!r}")
    try:
        msgspec.convert(event.data, payload_type)
    except msgspec.ValidationError as err:
        raise DecodeError(f"invalid {event.type} data: {err}") from err
    event.id = entry_id
    return event


def to_json(event: Event) -> bytes:
    return _json_encoder.encode(event)


def from_json(raw: bytes | str) -> Event:
    try:
        return _json_decoder.decode(raw)
    except msgspec.DecodeError as err:
        raise DecodeError(str(err)) from err


def payload(event: Event, payload_type: type[Payload]) -> Any:
    """The event's data as its typed payload."""
    return msgspec.convert(event.data, payload_type)
