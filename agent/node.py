"""The node's own record: registration, status on start and stop, heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from agent.outbox import Link, Outbox, Write
from agent.sysinfo import NodeFacts
from common import events
from common.keys import Keys
from common.redis_client import UNAVAILABLE, UNAVAILABLE_OR_TIMEOUT, Redis

logger = logging.getLogger(__name__)


def node_fields(facts: NodeFacts, status: str) -> dict[str, str]:
    fields: dict[str, str] = {k: str(v) for k, v in msgspec.structs.asdict(facts).items()}
    fields["status"] = status
    fields["last_seen"] = f"{time.time():.3f}"
    return fields


class NodePresence:
    def __init__(self, redis: Redis, keys: Keys, facts: NodeFacts, outbox: Outbox,
                 link: Link, heartbeat_interval: float) -> None:
        self._redis = redis
        self._keys = keys
        self._facts = facts
        self._outbox = outbox
        self._link = link
        self._interval = heartbeat_interval

    async def previous_status(self) -> str | None:
        try:
            async with asyncio.timeout(1.0):
                raw = await self._redis.hget(self._keys.node(self._facts.node_id), "status")
        except UNAVAILABLE_OR_TIMEOUT:
            return None
        return raw.decode() if raw else None

    def _status_writes(self, status: str) -> tuple[Write, ...]:
        node_id = self._facts.node_id
        flat: list[str] = []
        for key, value in node_fields(self._facts, status).items():
            flat += [key, value]
        return (
            Write(("HSET", self._keys.node(node_id), *flat)),
            Write(("SADD", self._keys.nodes, node_id)),
            Write(("ZADD", self._keys.heartbeats, time.time(), node_id)),
        )

    async def announce_ready(self) -> None:
        previous = await self.previous_status()
        self._outbox.emit(
            events.node_status_changed(self._facts.node_id, "ready", previous,
                                       reason="agent started"),
            self._status_writes("ready"))

    def announce_offline(self, reason: str) -> None:
        node_id = self._facts.node_id
        writes = (*self._status_writes("offline")[:2],
                  Write(("ZREM", self._keys.heartbeats, node_id)))
        self._outbox.emit(events.node_status_changed(node_id, "offline", "ready", reason=reason),
                          writes)

    async def heartbeat(self) -> None:
        """Beat every interval while Redis answers; a beat missed is simply missed."""
        node_id = self._facts.node_id
        while True:
            await asyncio.sleep(self._interval)
            now = time.time()
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._keys.heartbeats, {node_id: now})
                    pipe.hset(self._keys.node(node_id), "last_seen", f"{now:.3f}")
                    await pipe.execute()
                self._link.set(True)
            except UNAVAILABLE:
                self._link.set(False)
