"""Everything the agent writes to Redis, in order, surviving the times Redis is away.

Each item is an event plus the state writes that belong to it; both go in one MULTI/EXEC,
so no event is seen without its state. While Redis is unreachable items wait in a bounded
queue; when it is full the oldest are dropped, counted, and reported once the link is
back (gap accounting: the UI says "no data from T1 to T2" instead of a silent hole).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from common import events
from common.keys import EVENT_FIELD, Keys
from common.redis_client import UNAVAILABLE, Redis

logger = logging.getLogger(__name__)

Arg = str | bytes | int | float
BATCH = 64
"""Items per transaction when draining a backlog: one round trip instead of 64."""


@dataclass(frozen=True, slots=True)
class Write:
    """One Redis command applied in the same transaction as the event."""

    args: tuple[Arg, ...]


@dataclass(slots=True)
class _Item:
    event: bytes | None
    writes: tuple[Write, ...]


class Link:
    """Whether Redis answers; listeners hear about each change (fail-safe, logs)."""

    def __init__(self) -> None:
        self.up = False
        self.down_since: float | None = time.monotonic()
        self._listeners: list[Callable[[bool], None]] = []

    def listen(self, callback: Callable[[bool], None]) -> None:
        self._listeners.append(callback)

    def set(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.down_since = None if up else time.monotonic()
        for callback in self._listeners:
            callback(up)


class Outbox:
    def __init__(self, redis: Redis, keys: Keys, link: Link, *, size: int,
                 stream_maxlen: int = 100_000) -> None:
        self._redis = redis
        self._keys = keys
        self._link = link
        self._queue: deque[_Item] = deque()
        self._size = size
        self._maxlen = stream_maxlen
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped = 0
        self._dropped_since: str | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def emit(self, event: events.Event | None, writes: tuple[Write, ...] = ()) -> None:
        """Queue an event (and its state writes) for Redis; never blocks, never raises."""
        if len(self._queue) >= self._size:
            self._queue.popleft()
            if not self.dropped:
                self._dropped_since = events.now_iso()
            self.dropped += 1
        self._queue.append(_Item(events.encode(event) if event else None, writes))
        self._drained.clear()
        self._wakeup.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until everything queued so far is in Redis; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        delay = 0.05
        while True:
            if not self._queue:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            try:
                await self._write(batch)
            except UNAVAILABLE as err:
                if self._link.up:
                    logger.warning("Redis unreachable (%s): keeping events in the outbox",
                                   type(err).__name__)
                self._link.set(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except ResponseError as err:
                # Redis refused a command (wrong type, out of memory): retrying cannot help,
                # and the rest of the transaction was applied.
                logger.error("Redis refused an outbox write, dropped it: %s", err)
            delay = 0.05
            for _ in batch:
                self._queue.popleft()
            if not self._link.up:
                self._link.set(True)
            if self.dropped:
                self._report_gap()

    def _report_gap(self) -> None:
        count, since = self.dropped, self._dropped_since
        self.dropped, self._dropped_since = 0, None
        logger.warning("outbox overflowed while Redis was away: %d events since %s were lost",
                       count, since)

    async def _write(self, batch: list[_Item]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for item in batch:
                for write in item.writes:
                    pipe.execute_command(*write.args)
                if item.event is not None:
                    pipe.xadd(self._keys.events, {EVENT_FIELD: item.event},
                              maxlen=self._maxlen, approximate=True)
            await pipe.execute()
