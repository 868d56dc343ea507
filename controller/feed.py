"""The one reader of the events stream: decode once, encode once, hand to the hub.

Entries that cannot be decoded go to the dead-letter stream with the reason and the reader
carries on. Several controller replicas each read the whole stream; the dead-letter entry
reuses the bad entry's id, so the first replica to see it records it and the others' XADD
is refused as a duplicate: one dead letter per bad entry, however many replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from common import events
from common.errors import DecodeError
from common.keys import EVENT_FIELD
from common.redis_client import UNAVAILABLE
from controller.store.eventlog import EventLog
from controller.ws.frames import text_frame
from controller.ws.hub import Hub, Outgoing

logger = logging.getLogger(__name__)

READ_COUNT = 500
BLOCK_MS = 2000
LINGER_WHEN_FASTER_THAN = 0.005
LINGER = 0.002
"""When events come faster than one per 5 ms, wait 2 ms before the next read so that what
arrives meanwhile leaves in the same write to each client: at 1,000 events/s that is a third
of the socket writes, for at most 2 ms of added latency. Slower feeds are never delayed."""


def outgoing(entry_id: str, event: events.Event) -> Outgoing:
    return Outgoing(entry_id, event.type, event.node_id, event.cluster_id, event.resource,
                    text_frame(events.to_json(event)))


class Feed:
    def __init__(self, log: EventLog, hub: Hub) -> None:
        self._log = log
        self._hub = hub
        self.position: str | None = None
        self.dead_letters = 0
        self.ready = asyncio.Event()
        self.listeners: list[Callable[[events.Event], None]] = []
        self.on_published: list[Callable[[str], None]] = []
        """Told the position of each batch once the hub has it (metrics)."""
        self.on_lost_events: list[Callable[[], Awaitable[None]]] = []
        """Run after the stream lost events this feed had delivered (a failover)."""
        self.lost_events = 0
        """How many times that happened."""

    async def _start_position(self) -> str:
        return await self._log.last_id()

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                if self.position is None:
                    self.position = await self._start_position()
                    self._hub.advance(self.position)
                else:
                    await self._check_continuity()
                self.ready.set()
                delay = 0.1
                await self._read_forever()
            except UNAVAILABLE as err:
                logger.warning("event feed lost Redis (%s); retrying", type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _check_continuity(self) -> None:
        """Is the last event delivered still in the stream? After a failover the promoted
        replica may lack the newest writes (replication is asynchronous): then every
        client is told to re-read state (ws.resync) instead of missing them silently, new
        ids are made to follow the lost ones (ids never go back), and reading goes on
        from the newest event the stream kept."""
        position = self.position
        if position is None or position == "0-0" or await self._log.holds(position):
            return
        info = await self._log.info()
        if info.first_id is not None and events.id_key(position) < events.id_key(
                info.first_id):
            return  # trimmed past it (the feed was far behind): not a loss
        kept = await self._log.last_at_or_before(position) or "0-0"
        await self._log.ids_after(position)
        self.lost_events += 1
        logger.warning("the event stream lost the events after %s up to %s (a Redis failover "
                       "before they were replicated?): telling every client to re-read state",
                       kept, position)
        self._hub.resync_all(f"the store lost events after {kept} (a failover); re-read "
                             "state")
        self.position = kept
        for callback in self.on_lost_events:
            await callback()

    async def _read_forever(self) -> None:
        loop = asyncio.get_running_loop()
        previous = 0.0
        while True:
            assert self.position is not None
            entries = await self._log.read(self.position, READ_COUNT, BLOCK_MS)
            if not entries:
                await self._check_continuity()  # quiet: the cheap moment to look
                continue
            batch: list[Outgoing] = []
            for raw_id, fields in entries:
                entry_id = raw_id.decode()
                try:
                    event = events.decode(fields[EVENT_FIELD], entry_id)
                except (DecodeError, KeyError) as err:
                    await self._dead_letter(entry_id, fields, err)
                    continue
                batch.append(outgoing(entry_id, event))
                for listener in self.listeners:
                    listener(event)
            self.position = entries[-1][0].decode()
            self._hub.publish(batch)
            self._hub.advance(self.position)
            for published in self.on_published:
                published(self.position)
            now = loop.time()
            if now - previous < LINGER_WHEN_FASTER_THAN:
                await asyncio.sleep(LINGER)
            previous = now

    async def _dead_letter(self, entry_id: str, fields: dict[bytes, bytes],
                           err: Exception) -> None:
        reason = f"missing field {EVENT_FIELD.decode()!r}" if isinstance(err, KeyError) else str(
            err)
        self.dead_letters += 1
        logger.warning("event %s dead-lettered: %s", entry_id, reason)
        await self._log.dead_letter(entry_id, reason, fields.get(EVENT_FIELD, b""))
