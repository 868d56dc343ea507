"""Operator changes to nodes: labels, maintenance, forgetting a node."""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from common import events
from common.errors import NotFoundError, ValidationError
from controller import node_status
from controller.discovery import registry
from controller.health_alerts import HealthAlerts
from controller.node_status import set_node_status
from controller.store import Node, Store

_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_RESTORABLE = (node_status.DISCOVERED, node_status.PROVISIONING, node_status.FAILED)
UPDATABLE = ("labels", "maintenance")


def validate_update(body: Any) -> tuple[dict[str, str] | None, bool | None]:
    """``{"labels": {...}, "maintenance": bool}``, both optional; labels as Kubernetes's."""
    if not isinstance(body, dict):
        raise ValidationError("body", "a JSON object is required")
    unknown = sorted(set(body) - set(UPDATABLE))
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; updatable: {', '.join(UPDATABLE)}")
    labels, maintenance = body.get("labels"), body.get("maintenance")
    if labels is not None:
        if not isinstance(labels, dict):
            raise ValidationError("labels", "an object of string keys and values")
        for key, value in labels.items():
            if not _LABEL_NAME.match(key):
                raise ValidationError(f"labels.{key}", "not a valid label name (prefix/name, "
                                      "name up to 63 letters, digits, '-', '_', '.')")
            if not isinstance(value, str) or not _LABEL_VALUE.match(value):
                raise ValidationError(f"labels.{key}", "value must be a string of up to 63 "
                                      "letters, digits, '-', '_', '.'")
    if maintenance is not None and not isinstance(maintenance, bool):
        raise ValidationError("maintenance", "must be true or false")
    return labels, maintenance


async def update(store: Store, node_id: str, labels: dict[str, str] | None,
                 maintenance: bool | None, actor: str, heartbeat_timeout: float) -> Node:
    node = await store.node(node_id)
    if node is None or not await store.redis.sismember(store.keys.nodes, node_id):
        raise NotFoundError("node", node_id)
    key = store.keys.node(node_id)
    if labels is not None:
        await store.redis.hset(key, "labels", msgspec.json.encode(labels))
    if maintenance is True:
        await set_node_status(store, node_id, node_status.MAINTENANCE,
                              f"maintenance set by {actor}",
                              fields={"maintenance": "1",
                                      "status_before_maintenance": node.status})
        await store.redis.hset(key, "maintenance", "1")
    elif maintenance is False and node.maintenance:
        await store.redis.hset(key, "maintenance", "0")
        await set_node_status(store, node_id,
                              await _after_maintenance(store, node_id, heartbeat_timeout),
                              f"maintenance ended by {actor}",
                              expected=(node_status.MAINTENANCE,))
    updated = await store.node(node_id)
    assert updated is not None
    return updated


async def _after_maintenance(store: Store, node_id: str, timeout: float) -> str:
    score = await store.redis.zscore(store.keys.heartbeats, node_id)
    if score is not None and score >= time.time() - timeout:
        return node_status.READY
    before = await store.redis.hget(store.keys.node(node_id), "status_before_maintenance")
    restored = before.decode() if before else ""
    if restored in _RESTORABLE:
        return restored
    return node_status.OFFLINE


async def forget(store: Store, node_id: str, actor: str) -> None:
    """Delete a node with its heartbeats, metrics and aliases; emits node.removed."""
    if not await store.redis.sismember(store.keys.nodes, node_id):
        raise NotFoundError("node", node_id)
    keys = store.keys
    await store.commit((
        lambda p: p.delete(keys.node(node_id)),
        lambda p: p.srem(keys.nodes, node_id),
        lambda p: p.zrem(keys.heartbeats, node_id),
        lambda p: p.delete(keys.node_metrics(node_id)),
    ), events.node_removed(node_id, f"forgotten by {actor}", actor=actor))
    await registry.forget(store, node_id)
    await HealthAlerts.forget(store, node_id)


async def metrics(store: Store, node_id: str, limit: int) -> list[Any]:
    if not await store.redis.sismember(store.keys.nodes, node_id):
        raise NotFoundError("node", node_id)
    raw = await store.redis.lrange(store.keys.node_metrics(node_id), 0, limit - 1)
    return [msgspec.json.decode(r) for r in raw]
