"""Node status transitions: compare-and-set on the node hash, one event per transition.

Several writers may race to move the same node (liveness on two overlapping replicas, the
provisioner, an operator putting the node in maintenance). Each transition is written with
WATCH on the node hash and MULTI/EXEC together with its ``node.status.changed`` event, so a
transition happens, and is announced, exactly once: the loser of a race re-reads and finds
the work done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Final

from redis.exceptions import WatchError

from common import events
from controller.store import Store

logger = logging.getLogger(__name__)

DISCOVERED: Final = "discovered"
PROVISIONING: Final = "provisioning"
READY: Final = "ready"
NOT_READY: Final = "not_ready"
OFFLINE: Final = "offline"
MAINTENANCE: Final = "maintenance"
FAILED: Final = "failed"

STATUSES: Final = (DISCOVERED, PROVISIONING, READY, NOT_READY, OFFLINE, MAINTENANCE, FAILED)

_ATTEMPTS = 20
"""Agents write last_seen into the node hash on every beat, so a WATCH can be broken by a
heartbeat; re-reading is cheap and a handful of attempts always suffices in practice."""


async def set_node_status(
    store: Store,
    node_id: str,
    status: str,
    reason: str,
    *,
    expected: Collection[str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> bool:
    """Move ``node_id`` to ``status`` and emit ``node.status.changed``; True if this call did.

    Nothing happens (False) when the node does not exist, is already in ``status``, or its
    current status is not in ``expected`` (when given). ``fields`` are extra hash fields
    written in the same transaction. Raises ValueError for a status outside STATUSES.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown node status {status!r}: one of {', '.join(STATUSES)}")
    key = store.keys.node(node_id)
    for _ in range(_ATTEMPTS):
        async with store.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                in_index = await pipe.sismember(store.keys.nodes, node_id)
                raw = await pipe.hget(key, "status")
                if not in_index:
                    return False
                previous = raw.decode() if raw else None
                if previous == status:
                    return False
                if expected is not None and previous not in expected:
                    return False
                pipe.multi()
                pipe.hset(key, mapping={"status": status, "status_reason": reason,
                                        "status_changed": f"{time.time():.3f}",
                                        **(fields or {})})
                store.stage_event(pipe, events.node_status_changed(
                    node_id, status, previous, reason=reason))
                await pipe.execute()
            except WatchError:
                continue
        logger.info("node %s: %s -> %s (%s)", node_id, previous, status, reason)
        return True
    logger.warning("node %s: gave up moving to %s after %d contended attempts", node_id,
                   status, _ATTEMPTS)
    return False


async def node_status(store: Store, node_id: str) -> str | None:
    raw = await store.redis.hget(store.keys.node(node_id), "status")
    return raw.decode() if raw else None
