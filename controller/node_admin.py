"""Operator changes to nodes: labels, maintenance, forgetting a node."""

from __future__ import annotations

import time
from typing import Any

from common import events, grammar
from common.errors import NotFoundError, ValidationError
from controller import node_status
from controller.store import Node, Store
from controller.store.nodes import hash_fields

_RESTORABLE = (node_status.DISCOVERED, node_status.PROVISIONING, node_status.FAILED)
UPDATABLE = ("labels", "maintenance")
MAX_LABELS = 64
"""Labels per node: they travel in every node snapshot."""


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
        if len(labels) > MAX_LABELS:
            raise ValidationError("labels", f"at most {MAX_LABELS} labels")
        for key, value in labels.items():
            if not grammar.LABEL_NAME.fullmatch(key):
                raise ValidationError(f"labels.{key[:64]}", "not a valid label name (prefix/name, "
                                      "name up to 63 letters, digits, '-', '_', '.')")
            if not isinstance(value, str) or not grammar.LABEL_VALUE.fullmatch(value):
                raise ValidationError(f"labels.{key}", "value must be a string of up to 63 "
                                      "letters, digits, '-', '_', '.'")
    if maintenance is not None and not isinstance(maintenance, bool):
        raise ValidationError("maintenance", "must be true or false")
    return labels, maintenance


async def update(store: Store, node_id: str, labels: dict[str, str] | None,
                 maintenance: bool | None, actor: str, heartbeat_timeout: float) -> Node:
    node = await store.nodes.get(node_id)
    if node is None or not await store.nodes.exists(node_id):
        raise NotFoundError("node", node_id)
    if labels is not None and not await store.nodes.update(node_id, hash_fields(labels=labels)):
        raise NotFoundError("node", node_id)
    if maintenance is True:
        moved = await store.nodes.transition(
            node_id, node_status.MAINTENANCE, f"maintenance set by {actor}",
            fields=hash_fields(maintenance=True, status_before_maintenance=node.status))
        if not moved:  # in maintenance already: the flag is set all the same
            await store.nodes.update(node_id, hash_fields(maintenance=True))
    elif maintenance is False and node.maintenance:
        await store.nodes.update(node_id, hash_fields(maintenance=False))
        await store.nodes.transition(
            node_id, await _after_maintenance(store, node_id, heartbeat_timeout),
            f"maintenance ended by {actor}", expected=(node_status.MAINTENANCE,))
    updated = await store.nodes.get(node_id)
    if updated is None:
        raise NotFoundError("node", node_id)
    return updated


async def _after_maintenance(store: Store, node_id: str, timeout: float) -> str:
    [beat] = await store.nodes.last_beats([node_id])
    if beat is not None and beat >= time.time() - timeout:
        return node_status.READY
    restored = await store.nodes.field(node_id, "status_before_maintenance") or ""
    if restored in _RESTORABLE:
        return restored
    return node_status.OFFLINE


async def forget(store: Store, node_id: str, actor: str) -> None:
    """Delete a node with its heartbeats, liveness, metrics, aliases and alerts; emits
    node.removed. The agent's credentials are the caller's to revoke."""
    if not await store.nodes.forget(
            node_id, events.node_removed(node_id, f"forgotten by {actor}", actor=actor)):
        raise NotFoundError("node", node_id)
    await store.discovery.forget(node_id)
    await store.alerts.forget(node_id)


async def metrics(store: Store, node_id: str, limit: int) -> list[Any]:
    if not await store.nodes.exists(node_id):
        raise NotFoundError("node", node_id)
    return await store.nodes.metrics(node_id, limit)
