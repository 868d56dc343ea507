"""Liveness: a node whose heartbeats stop goes ``offline``; when they resume, ``ready``.

Runs on one replica under a lease. Each tick costs one Redis command when every node is
healthy (the stale range of the heartbeats sorted set is empty); the nodes this duty knows
to be offline cost one ZMSCORE more. Transitions go through ``set_node_status``
(compare-and-set), so an overlapping replica cannot announce one twice, and a node in
maintenance (or provisioning, or failed) is never touched: only ``ready``/``not_ready`` may
go offline and only ``offline`` comes back.

Heartbeat scores are the agents' wall clocks compared with the controller's: nodes and
controller are expected to run NTP (Raspberry Pi OS does, through systemd-timesyncd).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common import events
from common.tasks import checkpoint
from controller import node_status
from controller.node_status import set_node_status
from controller.state import Store

logger = logging.getLogger(__name__)

MIN_TICK = 0.05
MAX_TICK = 2.0


class Liveness:
    def __init__(self, store: Store, *, heartbeat_interval: float, missed_heartbeats: int,
                 listeners: list[Callable[[events.Event], None]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._listeners = listeners if listeners is not None else []
        self._restarted: set[str] = set()
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
        self._listeners.append(self._on_event)
        try:
            while True:
                await self.check()
                checkpoint()
                await asyncio.sleep(self.tick)
        finally:
            self._listeners.remove(self._on_event)

    def _on_event(self, event: events.Event) -> None:
        # An agent that starts says "ready" by itself, also on a node in maintenance (a
        # reboot is what maintenance is often for): noted here, put back in check().
        if (event.type == events.NODE_STATUS_CHANGED and event.node_id
                and event.data.get("status") == node_status.READY):
            self._restarted.add(event.node_id)

    async def _load(self) -> None:
        """Learn which nodes are offline already (marked by a previous lease holder)."""
        store = self._store
        ids = await store.node_ids()
        if not ids:
            return
        async with store.redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hget(store.keys.node(node_id), "status")
            statuses = await pipe.execute()
        self._offline = {i for i, s in zip(ids, statuses, strict=True)
                         if s == node_status.OFFLINE.encode()}

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
        await self._judge(now)
        self._last_check = time.monotonic()

    async def _judge(self, now: float) -> None:
        store = self._store
        cutoff = now - self.timeout
        stale = await store.redis.zrangebyscore(store.keys.heartbeats, "-inf", f"({cutoff}",
                                                withscores=True)
        for raw_id, score in stale:
            node_id = raw_id.decode()
            if self._handled.get(node_id) == score:
                continue
            self._handled[node_id] = score
            reason = (f"no heartbeat for {now - score:.1f}s ({self._missed} missed at "
                      f"{self._interval:g}s)")
            if await set_node_status(store, node_id, node_status.OFFLINE, reason,
                                     expected=(node_status.READY, node_status.NOT_READY)):
                self._offline.add(node_id)
        if self._offline:
            await self._check_resumed(cutoff)
        if self._restarted:
            await self._keep_maintenance()

    async def _keep_maintenance(self) -> None:
        store = self._store
        ids, self._restarted = sorted(self._restarted), set()
        async with store.redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hget(store.keys.node(node_id), "maintenance")
            flags = await pipe.execute()
        for node_id, flag in zip(ids, flags, strict=True):
            if flag == b"1":
                await set_node_status(store, node_id, node_status.MAINTENANCE,
                                      "agent restarted during maintenance",
                                      expected=(node_status.READY,))

    async def _check_resumed(self, cutoff: float) -> None:
        store = self._store
        ids = sorted(self._offline)
        scores = await store.redis.zmscore(store.keys.heartbeats, ids)
        for node_id, score in zip(ids, scores, strict=True):
            if score is None:
                # Stopped cleanly or forgotten: the agent says "ready" itself when it starts.
                self._offline.discard(node_id)
                self._handled.pop(node_id, None)
            elif score >= cutoff:
                self._offline.discard(node_id)
                self._handled.pop(node_id, None)
                await set_node_status(store, node_id, node_status.READY, "heartbeats resumed",
                                      expected=(node_status.OFFLINE,))
