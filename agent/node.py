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
        self._status: str | None = None

    async def recorded(self) -> tuple[str | None, bool]:
        """The node's recorded status, and whether an operator put it in maintenance."""
        try:
            async with asyncio.timeout(1.0):
                status, maintenance = await self._redis.hmget(
                    self._keys.node(self._facts.node_id), "status", "maintenance")
        except UNAVAILABLE_OR_TIMEOUT:
            return None, False
        return (status.decode() if status else None,
                maintenance is not None and maintenance.decode() in ("1", "true"))

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
        """Register; a node an operator put in maintenance stays in maintenance."""
        previous, maintenance = await self.recorded()
        status = "maintenance" if maintenance else "ready"
        self._status = status
        event = None if previous == status else events.node_status_changed(
            self._facts.node_id, status, previous, reason="agent started")
        self._outbox.emit(event, self._status_writes(status))

    def announce_offline(self, reason: str) -> None:
        node_id = self._facts.node_id
        stop_beating = Write(("ZREM", self._keys.heartbeats, node_id))
        if self._status == "maintenance":
            self._outbox.emit(None, (stop_beating,))
            return
        writes = (*self._status_writes("offline")[:2], stop_beating)
        self._outbox.emit(events.node_status_changed(node_id, "offline", self._status,
                                                     reason=reason), writes)
        self._status = "offline"

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
