"""Liveness: a node whose heartbeats stop goes ``offline``; when they resume, ``ready``.

Runs on one replica under a lease. Each tick costs one Redis command when every node is
healthy (the stale range of the heartbeats sorted set is empty); the nodes this duty knows
to be offline cost one ZMSCORE more. Transitions go through ``set_node_status``
(compare-and-set), so an overlapping replica cannot announce one twice, and a node in
maintenance (or provisioning, or failed) is never touched: only ``ready``/``not_ready`` may
go offline and only ``offline`` comes back.

A heartbeat is an agent rewriting its own ``alive`` key. Each tick compares every node's key
with the value seen last (kept in Redis, so a replica taking the lease over carries on) and,
for those that changed, records the controller's own time in the heartbeats sorted set:
liveness is judged by one clock, so a Pi with a wrong clock is not taken for dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common.tasks import checkpoint
from controller import node_status
from controller.node_status import set_node_status
from controller.store import Store

logger = logging.getLogger(__name__)

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
"""Every change of a node's value is a beat (what was seen last is kept in Redis, so a new
lease holder carries on). ``XX``: a node that stopped cleanly is not brought back by a late
beat, only by its next 'started' report."""

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

    async def observe_beats(self, now: float) -> int:
        """Record ``now`` as the last heartbeat of every node whose alive key changed since
        the last tick; returns how many beat. One command: the comparison runs in Redis, so
        a thousand nodes cost this process next to nothing per tick."""
        keys = self._store.keys
        return int(await self._store.redis.eval(
            _OBSERVE_BEATS, 3, keys.nodes, keys.alive_seen, keys.heartbeats, keys.alive(""),
            f"{now:.3f}"))

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
        await self.observe_beats(now)
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
