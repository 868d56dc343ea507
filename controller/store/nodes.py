"""Nodes: the node record (``pic:node:{id}``, typed by ``Node``), the index of nodes, status
transitions with their events, heartbeats and the health history.

Transitions are compare-and-set (WATCH on the node record, ``store.tx``) together with their
``node.status.changed``: when liveness on two overlapping replicas, the provisioner and an
operator race to move one node, the move happens, and is announced, exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio.client import Pipeline

from common import events
from common.redis_client import Redis
from controller import node_status
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store

logger = logging.getLogger(__name__)


class Node(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A node record. The facts an agent reports (``common.reports.NodeFacts``) are part
    of it; the controller owns the rest."""

    id: str
    status: str = "unknown"
    hostname: str = ""
    ip_address: str = ""
    model: str = ""
    arch: str = ""
    os: str = ""
    kernel: str = ""
    agent_version: str = ""
    gpio_backend: str = ""
    last_seen: float | None = None
    labels: dict[str, str] = {}
    maintenance: bool = False
    source: str = ""
    mac: str = ""
    status_reason: str = ""
    error: str = ""


_node_fields = {f for f in Node.__struct_fields__ if f != "id"}


def node_from_hash(node_id: str, raw: dict[bytes, bytes], last_beat: float | None = None
                   ) -> Node:
    """The node record; ``last_seen`` is its last heartbeat as the controller saw it."""
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        if name not in _node_fields or name == "last_seen":
            continue
        text = value.decode(errors="replace")
        if name == "labels":
            fields[name] = msgspec.json.decode(value) if value else {}
        elif name == "maintenance":
            fields[name] = text in ("1", "true")
        else:
            fields[name] = text
    if last_beat is not None:
        fields["last_seen"] = float(last_beat)
    return Node(id=node_id, **fields)


def hash_fields(**values: str | bool | dict[str, str] | None) -> dict[str, str]:
    """Node record fields as stored: text as is, flags as 1/0, labels as JSON."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, dict):
            out[name] = msgspec.json.encode(value).decode()
        elif value is not None:
            out[name] = value
    return out


_OBSERVE_BEATS = """
local changed = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. node)
  if value then
    local seen = redis.call('HGET', KEYS[2], node)
    if seen ~= value then
      redis.call('HSET', KEYS[2], node, value)
      changed = changed + redis.call('ZADD', KEYS[3], 'XX', 'CH', ARGV[2], node)
    end
  end
end
return changed
"""
"""Every change of a node's alive value is a beat (what was seen last is kept in Redis, so a
new lease holder carries on). ``XX``: a node that stopped cleanly is not brought back by a
late beat, only by its next 'started' report."""


class Nodes:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    # --- reading ---------------------------------------------------------------------

    async def ids(self) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(self._keys.nodes))

    async def exists(self, node_id: str) -> bool:
        return bool(await self._redis.sismember(self._keys.nodes, node_id))

    async def all(self) -> list[Node]:
        ids = await self.ids()
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(self._keys.node(node_id))
            pipe.zmscore(self._keys.heartbeats, ids)
            *rows, beats = await pipe.execute()
        return [node_from_hash(i, r, beat) for i, r, beat in zip(ids, rows, beats, strict=True)
                if r]

    async def get(self, node_id: str) -> Node | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.node(node_id))
            pipe.zscore(self._keys.heartbeats, node_id)
            raw, beat = await pipe.execute()
        return node_from_hash(node_id, raw, beat) if raw else None

    async def status(self, node_id: str) -> str | None:
        raw = await self._redis.hget(self._keys.node(node_id), "status")
        return raw.decode() if raw else None

    async def statuses(self, ids: Sequence[str]) -> list[str | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hget(self._keys.node(node_id), "status")
            raw = await pipe.execute()
        return [r.decode() if r else None for r in raw]

    async def field(self, node_id: str, name: str) -> str | None:
        """One stored field that ``Node`` does not carry (``ssh_user``, ``cluster_id``...)."""
        raw = await self._redis.hget(self._keys.node(node_id), name)
        return raw.decode() if raw is not None else None

    async def fields(self, node_id: str, *names: str) -> list[str | None]:
        raw = await self._redis.hmget(self._keys.node(node_id), *names)
        return [r.decode() if r is not None else None for r in raw]

    async def metrics(self, node_id: str, limit: int) -> list[Any]:
        raw = await self._redis.lrange(self._keys.node_metrics(node_id), 0, limit - 1)
        return [msgspec.json.decode(r) for r in raw]

    # --- writing ---------------------------------------------------------------------

    async def update(self, node_id: str, fields: Mapping[str, str]) -> bool:
        """Set fields of an existing node's record (no event); False if it does not exist."""
        key = self._keys.node(node_id)

        async def body(pipe: Pipeline) -> bool:
            if not await pipe.sismember(self._keys.nodes, node_id):
                return False
            pipe.multi()
            pipe.hset(key, mapping=dict(fields))
            return True

        return await tx.transact(self._redis, [key], body, what=f"node {node_id!r}",
                                 field="node_id")

    async def transition(self, node_id: str, status: str, reason: str, *,
                         expected: Collection[str] | None = None,
                         fields: Mapping[str, str] | None = None) -> bool:
        """Move ``node_id`` to ``status`` and emit ``node.status.changed``; True if this call
        did. Nothing happens (False) when the node does not exist, is already in ``status``,
        or its current status is not in ``expected`` (when given). ``fields`` are written
        in the same transaction. Raises ValueError for a status outside STATUSES."""
        if status not in node_status.STATUSES:
            raise ValueError(f"unknown node status {status!r}: one of "
                             f"{', '.join(node_status.STATUSES)}")
        key = self._keys.node(node_id)

        async def body(pipe: Pipeline) -> str | None:
            if not await pipe.sismember(self._keys.nodes, node_id):
                return None
            raw = await pipe.hget(key, "status")
            previous = raw.decode() if raw else None
            if previous == status or (expected is not None and previous not in expected):
                return None
            pipe.multi()
            pipe.hset(key, mapping={"status": status, "status_reason": reason,
                                    "status_changed": f"{time.time():.3f}", **(fields or {})})
            self._store.stage_event(pipe, events.node_status_changed(
                node_id, status, previous, reason=reason))
            return previous or ""

        previous = await tx.transact(self._redis, [key], body, what=f"node {node_id!r}",
                                     field="status")
        if previous is None:
            return False
        logger.info("node %s: %s -> %s (%s)", node_id, previous or None, status, reason)
        return True

    async def forget(self, node_id: str, event: events.Event) -> bool:
        """Delete a node's record, heartbeats, liveness and metrics, with ``event``."""
        keys = self._keys

        async def body(pipe: Pipeline) -> bool:
            if not await pipe.sismember(keys.nodes, node_id):
                return False
            pipe.multi()
            pipe.delete(keys.node(node_id), keys.node_metrics(node_id), keys.alive(node_id))
            pipe.srem(keys.nodes, node_id)
            pipe.zrem(keys.heartbeats, node_id)
            pipe.hdel(keys.alive_seen, node_id)
            self._store.stage_event(pipe, event)
            return True

        return await tx.transact(self._redis, [keys.node(node_id)], body,
                                 what=f"node {node_id!r}", field="node_id")

    # --- heartbeats ------------------------------------------------------------------

    async def observe_beats(self, now: float) -> int:
        """Record ``now`` as the last heartbeat of every node whose alive key changed since
        the last look; returns how many beat. One command: the comparison runs in Redis, so
        a thousand nodes cost this process next to nothing."""
        keys = self._keys
        return int(await self._redis.eval(
            _OBSERVE_BEATS, 3, keys.nodes, keys.alive_seen, keys.heartbeats, keys.alive(""),
            f"{now:.3f}"))

    async def stale(self, cutoff: float) -> list[tuple[str, float]]:
        """Nodes whose last heartbeat is older than ``cutoff``, with its time."""
        raw = await self._redis.zrangebyscore(self._keys.heartbeats, "-inf", f"({cutoff}",
                                              withscores=True)
        return [(m.decode(), float(score)) for m, score in raw]

    async def last_beats(self, ids: Sequence[str]) -> list[float | None]:
        if not ids:
            return []
        return [float(s) if s is not None else None
                for s in await self._redis.zmscore(self._keys.heartbeats, list(ids))]
