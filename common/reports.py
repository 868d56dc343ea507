"""What an agent reports to the controller: one typed report per entry of its ingress stream.

An agent never writes shared state. It appends reports to its own stream
(``Keys.ingress(node_id)``, field ``r``, msgpack); the controller reads them, checks each one
(schema, size, that the node speaks only for itself and only of its own resources), and
writes the resulting state change and canonical event itself. A report is a fact, not a
decision: ``Started`` says the agent runs, the controller decides the node's status.

Schema evolution: new fields get defaults; a field's type never changes; a new kind is a
new tag, which older controllers dead-letter with "unknown report kind".
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

import common
from common.errors import DecodeError
from common.gpio import GpioStatus

REPORT_FIELD: Final = b"r"
"""Field of an ingress-stream entry that holds the msgpack report."""

MAX_REPORT_BYTES: Final = 16 * 1024
"""Largest report accepted; the biggest real one (a health report) is under 1 KiB."""


class NodeFacts(msgspec.Struct, kw_only=True):
    """What a node is, as its agent reads it from /proc, /sys and /etc/os-release."""

    node_id: str
    hostname: str
    ip_address: str
    model: str
    arch: str
    os: str
    kernel: str
    agent_version: str = common.__version__
    gpio_backend: str = ""


class Report(msgspec.Struct, tag_field="kind", kw_only=True):
    at: str | None = None
    """When the agent observed it (ISO 8601 UTC, as ``events.now_iso``); set by the outbox.
    It becomes the event's timestamp, so an edge queued during an outage keeps its time."""


class Started(Report, tag="started"):
    """The agent (re)started on this node and is ready to apply commands."""

    facts: NodeFacts
    reason: str = "agent started"


class Stopping(Report, tag="stopping"):
    """The agent is stopping cleanly (SIGTERM): the node goes offline now, not after a timeout."""

    reason: str = "agent stopped"


class Health(Report, tag="health"):
    metrics: dict[str, Any]


class GpioReport(Report, tag="gpio"):
    """What a pin really is after a command, a reconcile, an input edge or fail-safe.

    ``announce`` is False for a status that is not a state change (an error): the
    controller records the status but emits no ``gpio.state.changed``.
    """

    resource: str
    pin: int
    status: GpioStatus
    reason: str | None = None
    announce: bool = True


class LogLine(Report, tag="log"):
    level: str
    message: str
    source: str = ""


class CommandRejected(Report, tag="command-rejected"):
    """A command the agent could not decode; the controller dead-letters it."""

    entry_id: str
    reason: str
    raw: bytes = b""


AnyReport = Started | Stopping | Health | GpioReport | LogLine | CommandRejected

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(AnyReport)


def encode(report: AnyReport) -> bytes:
    return _encoder.encode(report)


def decode(raw: bytes) -> AnyReport:
    """Decode and validate one report. Raises DecodeError with the reason."""
    if len(raw) > MAX_REPORT_BYTES:
        raise DecodeError(f"report of {len(raw)} bytes exceeds {MAX_REPORT_BYTES}")
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as err:
        raise DecodeError(f"invalid report: {err}") from err
