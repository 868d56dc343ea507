"""Liveness: a node whose heartbeats stop goes ``offline``; when they resume, ``ready``.

Runs on one replica under a lease. Each tick costs one Redis command when every node is
healthy (the stale range of the heartbeats sorted set is empty); the nodes this duty knows
to be offline cost one ZMSCORE more. Transitions go through ``store.nodes.transition``
(compare-and-set), so an overlapping replica cannot announce one twice, and a node in
maintenance (or provisioning, or failed) is never touched: only ``ready``/``not_ready`` may
go offline and only ``offline`` comes back.

A heartbeat is an agent rewriting its own ``alive`` key. Each tick, ``store.nodes.observe_beats``
compares every node's key with the value seen last (kept in Redis, so a replica taking the
lease over carries on) and, for those that changed, records the controller's own time as
their last heartbeat: liveness is judged by one clock, so a Pi with a wrong clock is not
taken for dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common.errors import ConflictError
from common.tasks import checkpoint
from controller import node_status
from controller.store import Store

logger = logging.getLogger(__name__)

MIN_TICK = 0.05
MAX_TICK = 2.0


class Liveness:
    def __init__(self, store: Store, *, heartbeat_interval: float, missed_heartbeats: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._last_check: float | None = None
        self._interval = heartbeat_interval
        self._missed = missed_heartbeats
        self.timeout = heartbeat_interval * missed_heartbeats
        self.tick = min(max(heartbeat_interval / 4, MIN_TICK), MAX_TICK)
        self._clock = clock
        self._offline: set[str] = set()
        # Score at which a stale node was last looked at: a dead node stays stale with the
        # same score, and is not looked at again until it beats (or is deleted).
        self._handled: dict[str, float] = {}

    async def run(self) -> None:
        await self._load()
        logger.info("liveness: offline after %gs without a heartbeat (%d x %gs)",
                    self.timeout, self._missed, self._interval)
        while True:
            await self.check()
            checkpoint()
            await asyncio.sleep(self.tick)

    async def _load(self) -> None:
        """Learn which nodes are offline already (marked by a previous lease holder)."""
        nodes = self._store.nodes
        ids = await nodes.ids()
        if not ids:
            return
        statuses = await nodes.statuses(ids)
        self._offline = {i for i, s in zip(ids, statuses, strict=True)
                         if s == node_status.OFFLINE}

    async def check(self) -> None:
        now = self._clock()
        late = (time.monotonic() - self._last_check - self.tick
                if self._last_check is not None else 0.0)
        if late > self.timeout / 2:
            # This process was stalled (paused VM, swap storm): every node would look
            # silent, though the silence was ours. Judge again on the next, timely tick.
            logger.warning("liveness check ran %.1fs late; not judging this round", late)
            self._last_check = time.monotonic()
            return
        await self._store.nodes.observe_beats(now)
        await self._judge(now)
        self._last_check = time.monotonic()

    async def _judge(self, now: float) -> None:
        cutoff = now - self.timeout
        for node_id, score in await self._store.nodes.stale(cutoff):
            if self._handled.get(node_id) == score:
                continue
            self._handled[node_id] = score
            reason = (f"no heartbeat for {now - score:.1f}s ({self._missed} missed at "
                      f"{self._interval:g}s)")
            if await self._move(node_id, node_status.OFFLINE, reason,
                                (node_status.READY, node_status.NOT_READY)):
                self._offline.add(node_id)
        if self._offline:
            await self._check_resumed(cutoff)

    async def _check_resumed(self, cutoff: float) -> None:
        ids = sorted(self._offline)
        beats = await self._store.nodes.last_beats(ids)
        for node_id, beat in zip(ids, beats, strict=True):
            if beat is None:
                # Stopped cleanly or forgotten: the agent says "ready" itself when it starts.
                self._offline.discard(node_id)
                self._handled.pop(node_id, None)
            elif beat >= cutoff:
                self._offline.discard(node_id)
                self._handled.pop(node_id, None)
                await self._move(node_id, node_status.READY, "heartbeats resumed",
                                 (node_status.OFFLINE,))

    async def _move(self, node_id: str, status: str, reason: str,
                    expected: tuple[str, ...]) -> bool:
        """A transition, or nothing when contention won it (the situation is judged anew
        once the node beats again)."""
        try:
            return await self._store.nodes.transition(node_id, status, reason,
                                                      expected=expected)
        except ConflictError:
            return False
