"""The node's presence: it says it started and stops, and proves liveness with heartbeats.

The agent does not decide its node's status: ``Started`` and ``Stopping`` are reports, and
the controller moves the node (a node in maintenance stays there). A heartbeat rewrites this
node's own ``alive`` key; the controller notices the change and judges liveness by its own
clock, so a Pi with a wrong clock is not taken for dead.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets

from agent.outbox import Link, Outbox
from common import reports
from common.keys import Keys
from common.redis_client import UNAVAILABLE, Redis


class NodePresence:
    def __init__(self, redis: Redis, keys: Keys, facts: reports.NodeFacts, outbox: Outbox,
                 link: Link, heartbeat_interval: float) -> None:
        self._redis = redis
        self._alive = keys.alive(facts.node_id)
        self._facts = facts
        self._outbox = outbox
        self._link = link
        self._interval = heartbeat_interval
        # The value only has to change with every beat: a fresh prefix per start, so a
        # restarted agent's first beat never repeats its last one.
        self._boot = secrets.token_hex(4)
        self._beats = itertools.count(1)

    def announce_started(self) -> None:
        self._outbox.emit(reports.Started(facts=self._facts))

    def announce_stopping(self, reason: str) -> None:
        self._outbox.emit(reports.Stopping(reason=reason))

    async def heartbeat(self) -> None:
        """Beat every interval while Redis answers; a beat missed is simply missed."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._redis.set(self._alive, f"{self._boot}:{next(self._beats)}")
                self._link.set(True)
            except UNAVAILABLE as err:
                self._link.failed(err)
