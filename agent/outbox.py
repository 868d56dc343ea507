"""Everything the agent tells the controller, in order, surviving the times Redis is away.

Each item is a report (``common.reports``) appended to this node's own ingress stream,
optionally with the XACK of the command it answers; both go in one MULTI/EXEC, so a command
is acknowledged exactly when its effect is reported. The same transaction rings this node's
channel, so the controller reads the stream at once without watching every agent's. The
agent writes nothing else: the controller turns reports into state and events. While
Redis is unreachable items wait in a bounded queue; when it is full the oldest are dropped,
counted, and reported once the link is back (gap accounting: the UI says "no data from T1
to T2" instead of a silent hole).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from common import events, reports
from common.keys import AGENT_GROUP, INGRESS_MAXLEN, Keys
from common.redis_client import UNAVAILABLE, Redis

logger = logging.getLogger(__name__)

BATCH = 64
"""Items per transaction when draining a backlog: one round trip instead of 64."""

REFUSED_BACKOFF = 30.0
"""Seconds between tries, at most, while Redis refuses our credentials (they will not start
working by themselves: an admin has to issue new ones)."""

Ack = str | bytes
"""The id of a command-stream entry to acknowledge with a report."""


@dataclass(slots=True)
class _Item:
    report: bytes | None
    ack: Ack | None


class Link:
    """Whether Redis answers; listeners hear about each change (fail-safe, logs)."""

    def __init__(self) -> None:
        self.up = False
        self.down_since: float | None = time.monotonic()
        self.refused = False
        self._said_unreachable = False
        self._listeners: list[Callable[[bool], None]] = []

    def failed(self, err: BaseException) -> None:
        """A Redis call failed: the link is down. Refused credentials (rotated or revoked,
        or wrong from the start) are said once, in one line, until the link is back."""
        if isinstance(err, AuthenticationError | NoPermissionError) and not self.refused:
            self.refused = True
            logger.error("Redis refused this agent's credentials (%s); retrying with backoff. "
                         "Issue new ones with POST /api/v1/nodes/{id}/agent-credentials and "
                         "put them in the agent's config", type(err).__name__)
        elif not self.refused and not self._said_unreachable:
            self._said_unreachable = True  # once per outage, from start-up on too
            logger.warning("Redis unreachable (%s): keeping reports in the outbox and "
                           "retrying", type(err).__name__)
        self.set(False)

    def listen(self, callback: Callable[[bool], None]) -> None:
        self._listeners.append(callback)

    def set(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.down_since = None if up else time.monotonic()
        if up:
            self.refused = False
            self._said_unreachable = False
        for callback in self._listeners:
            callback(up)


class Outbox:
    def __init__(self, redis: Redis, keys: Keys, node_id: str, link: Link, *,
                 size: int) -> None:
        self._redis = redis
        self._ingress = keys.ingress(node_id)
        self._commands = keys.commands(node_id)
        self._ring = keys.ring(node_id)
        self._link = link
        self._queue: deque[_Item] = deque()
        self._size = size
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped = 0
        self._dropped_since: str | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def emit(self, report: reports.AnyReport | None, ack: Ack | None = None) -> None:
        """Queue a report (and the command it answers) for Redis; never blocks, never raises."""
        if len(self._queue) >= self._size:
            self._queue.popleft()
            if not self.dropped:
                self._dropped_since = events.now_iso()
            self.dropped += 1
        if report is not None and report.at is None:
            report.at = events.now_iso()
        self._queue.append(_Item(reports.encode(report) if report else None, ack))
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
            except (*UNAVAILABLE, NoPermissionError) as err:
                self._link.failed(err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REFUSED_BACKOFF if self._link.refused else 2.0)
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
                if item.report is not None:
                    pipe.xadd(self._ingress, {reports.REPORT_FIELD: item.report},
                              maxlen=INGRESS_MAXLEN, approximate=True)
                if item.ack is not None:
                    pipe.xack(self._commands, AGENT_GROUP, item.ack)
            if any(item.report is not None for item in batch):
                pipe.publish(self._ring, b"")
            await pipe.execute()
