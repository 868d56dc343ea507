"""Every protocol message the server sends (``ws.*`` and the snapshot parts), built in one
place; docs/websocket.md describes each."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from controller.subscription import Subscription
from controller.ws.codes import ErrorCode

_json: Final = msgspec.json.Encoder()

Ref = int | str | None


def ack(ref: Ref, subscription: Subscription) -> bytes:
    return _json.encode({"type": "ws.ack", "ref": ref, "subscription": subscription.describe()})


def error(ref: Ref, code: ErrorCode, message: str) -> bytes:
    return _json.encode({"type": "ws.error", "ref": ref, "code": code.value,
                         "message": message})


def pong(ref: Ref) -> bytes:
    return _json.encode({"type": "ws.pong", "ref": ref})


def resync(since: str, reason: str) -> bytes:
    return _json.encode({"type": "ws.resync", "since": since, "reason": reason})


def coalesced(dropped: int) -> bytes:
    return _json.encode({"type": "ws.coalesced", "dropped": dropped,
                         "message": "you fell behind: only the latest state per key follows"})


def node_snapshot(node_id: str, node: Any) -> bytes:
    return _json.encode({"type": "node.snapshot", "node_id": node_id, "data": node})


def gpio_snapshot(resource: str, node_id: str, pin: Any) -> bytes:
    return _json.encode({"type": "gpio.snapshot", "resource": resource, "node_id": node_id,
                         "data": pin})


def cluster_snapshot(cluster_id: str, cluster: Any) -> bytes:
    return _json.encode({"type": "cluster.snapshot", "cluster_id": cluster_id,
                         "data": cluster})


def snapshot_end(last_id: str, count: int) -> bytes:
    return _json.encode({"type": "ws.snapshot.end", "id": last_id, "count": count})
