"""The event log: ``pic:events`` (appends, history pages, the live read, retention), the
dead letters, and the snapshot read together with the id of the last event it reflects.

Only this package appends events, always in the transaction of the state change they
announce (``Store.stage_event``); ``append`` is for events that change no state.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import ResponseError

from common import events, gpio
from common.keys import EVENT_FIELD
from common.redis_client import Redis
from controller.store.gpio import with_status
from controller.store.nodes import Node, node_from_hash

if TYPE_CHECKING:
    from controller.store.core import Store

DEAD_LETTER_MAXLEN = 10_000

Entry = tuple[bytes, dict[bytes, bytes]]
"""A raw stream entry: its id and its fields."""


class StreamInfo(msgspec.Struct):
    last_id: str
    max_deleted: str
    first_id: str | None
    trimmed: bool
    """Whether entries were ever cut from the front (XTRIM / MAXLEN / MINID)."""

    def resync_needed(self, since: str) -> bool:
        wanted = events.id_key(since)
        if wanted > events.id_key(self.last_id):
            return True  # an id from the future: the stream was reset
        if wanted < events.id_key(self.max_deleted):
            return True  # XDEL removed something after it
        # Trimming removes the oldest entries: anything before the first kept one may be gone,
        # and in a stream trimmed empty, anything before the last id.
        if not self.trimmed:
            return False
        return wanted < events.id_key(self.first_id or self.last_id)


class Snapshot(msgspec.Struct):
    last_id: str
    nodes: list[Node]
    pins: list[gpio.GpioPin]
    clusters: dict[str, dict[str, str]]


_SNAPSHOT_LUA = """
local result = {}
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
result[1] = #last > 0 and last[1][1] or '0-0'
for kind = 1, 3 do
  local rows = {}
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[2 + kind])) do
    local row = {member, redis.call('HGETALL', ARGV[kind] .. member)}
    if kind == 1 then row[3] = redis.call('ZSCORE', KEYS[2], member) end
    rows[#rows + 1] = row
  end
  result[#result + 1] = rows
end
return result
"""
"""KEYS: events, heartbeats, then the indexes of nodes, GPIO resources and clusters; ARGV:
the record key prefixes of the same three (from ``Keys``, never spelled here)."""


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


_SCAN = """
local position, count, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local entries
if ARGV[4] == '1' then
  entries = redis.call('XREVRANGE', KEYS[1], position == '+' and '+' or '(' .. position,
                       '-', 'COUNT', count)
else
  entries = redis.call('XRANGE', KEYS[1], position == '-' and '-' or '(' .. position,
                       '+', 'COUNT', count)
end
local groups, at = {}, 6
for g = 1, tonumber(ARGV[5]) do
  local n, group = tonumber(ARGV[at]), {}
  for k = 1, n do group[k] = ARGV[at + k] end
  groups[g] = group
  at = at + n + 1
end
local out, found, last = {false}, 0, false
for _, entry in ipairs(entries) do
  last = entry[1]
  local fields, raw = entry[2], ''
  for f = 1, #fields, 2 do
    if fields[f] == 'e' then raw = fields[f + 1] end
  end
  local ok = true
  for _, group in ipairs(groups) do
    local any = false
    for _, needle in ipairs(group) do
      if string.find(raw, needle, 1, true) then any = true break end
    end
    if not any then ok = false break end
  end
  if ok then
    out[#out + 1] = entry[1]
    out[#out + 1] = raw
    found = found + 1
    if found >= want then break end
  end
end
if #entries == count or found >= want then out[1] = last end
return out
"""
"""One page of a filtered history read, done inside Redis: XRANGE/XREVRANGE ``count``
entries from a position and keep those holding one needle of every group. The event field
is ``e`` (EVENT_FIELD)."""


class EventLog:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    async def append(self, event: events.Event) -> str:
        """Append an event that changes no state; returns its id."""
        entry_id = await self._redis.xadd(self._keys.events, {
            EVENT_FIELD: events.encode(event)}, maxlen=self._store.stream_maxlen,
            approximate=True)
        return str(entry_id.decode())

    async def last_id(self) -> str:
        last = await self._redis.xrevrange(self._keys.events, count=1)
        return str(last[0][0].decode()) if last else "0-0"

    async def holds(self, entry_id: str) -> bool:
        """Is the entry ``entry_id`` in the stream?"""
        return bool(await self._redis.xrange(self._keys.events, min=entry_id, max=entry_id,
                                             count=1))

    async def last_at_or_before(self, entry_id: str) -> str | None:
        found = await self._redis.xrevrange(self._keys.events, max=entry_id, count=1)
        return str(found[0][0].decode()) if found else None

    async def ids_after(self, entry_id: str) -> None:
        """Make the next ids follow ``entry_id`` (XSETID), unless they already do."""
        with contextlib.suppress(ResponseError):  # newer entries exist: their ids follow it
            await self._redis.execute_command("XSETID", self._keys.events, entry_id)

    async def scan(self, *, position: str, newest_first: bool, count: int,
                   needles: tuple[tuple[bytes, ...], ...], want: int
                   ) -> tuple[list[Entry], str | None]:
        """Up to ``want`` entries among the next ``count`` from ``position`` (exclusive;
        "+"/"-" for the ends) whose bytes hold, for every group of ``needles``, one of
        them; filtered inside Redis, so what cannot match never crosses the wire. Returns
        them and where to go on (None at the end of the stream)."""
        args: list[object] = [position, count, want, "1" if newest_first else "0",
                              len(needles)]
        for group in needles:
            args += [len(group), *group]
        reply = await self._redis.eval(_SCAN, 1, self._keys.events, *args)
        next_position = reply[0].decode() if reply[0] else None
        found: list[Entry] = [(reply[i], {EVENT_FIELD: reply[i + 1]})
                              for i in range(1, len(reply), 2)]
        return found, next_position

    async def read(self, after: str, count: int, block_ms: int) -> list[Entry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first."""
        reply = await self._redis.xread({self._keys.events: after}, count=count,
                                        block=block_ms)
        return list(reply[0][1]) if reply else []

    async def page(self, *, after: str | None = None, before: str | None = None,
                   count: int) -> list[Entry]:
        """Up to ``count`` entries after ``after`` (oldest first) or before ``before``
        (newest first; "+" for the newest); ids are exclusive bounds."""
        if before is not None:
            top = before if before == "+" else f"({before}"
            return list(await self._redis.xrevrange(self._keys.events, max=top, count=count))
        return list(await self._redis.xrange(self._keys.events, min=f"({after or '0-0'}",
                                             count=count))

    async def info(self) -> StreamInfo:
        try:
            info = await self._redis.xinfo_stream(self._keys.events)
        except ResponseError:  # no stream yet: nothing was ever trimmed
            return StreamInfo(last_id="0-0", max_deleted="0-0", first_id=None, trimmed=False)

        def text(value: object) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        first = info.get("first-entry")
        first_id = text(first[0]) if first else None
        added = info.get("entries-added")
        # Redis < 7 does not count additions: assume the worst, it may have been trimmed.
        trimmed = True if added is None else int(added) > int(info.get("length", 0))
        return StreamInfo(last_id=text(info.get("last-generated-id", "0-0")),
                          max_deleted=text(info.get("max-deleted-entry-id", "0-0")),
                          first_id=first_id, trimmed=trimmed)

    async def trim_older_than(self, max_age: float) -> None:
        """Drop events older than ``max_age`` seconds (count is bounded at every append)."""
        min_id = f"{int((time.time() - max_age) * 1000)}-0"
        await self._redis.xtrim(self._keys.events, minid=min_id, approximate=True)

    async def dead_letter(self, entry_id: str, reason: str, raw: bytes) -> bool:
        """Record an event entry that cannot be decoded. The dead letter reuses the entry's
        id, so with several replicas reading the stream it is recorded once: False when
        another replica was first."""
        try:
            await self._redis.xadd(self._keys.dead_letters, {
                b"stream": self._keys.events, b"reason": reason, b"raw": raw},
                id=entry_id, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        except ResponseError:
            return False
        await self._redis.incr(self._keys.dead_letter_count)
        return True

    async def snapshot(self) -> Snapshot:
        """Nodes, GPIO resources and clusters, read in one atomic step with the id of the
        last event they reflect."""
        keys = self._keys
        raw = await self._redis.eval(
            _SNAPSHOT_LUA, 5, keys.events, keys.heartbeats, keys.nodes, keys.gpio_index,
            keys.clusters, keys.node(""), keys.gpio(""), keys.cluster(""))
        last_id = raw[0].decode()
        nodes = sorted((node_from_hash(row[0].decode(), _pairs(row[1]),
                                       float(row[2]) if len(row) > 2 and row[2] else None)
                        for row in raw[1] if row[1]), key=lambda n: n.id)
        pins = []
        for row in raw[2]:
            fields = _pairs(row[1])
            if b"resource" in fields:
                pins.append(with_status(fields[b"resource"], fields.get(b"status")))
        pins.sort(key=lambda p: p.metadata.name)
        clusters = {row[0].decode(): {k.decode(): v.decode() for k, v in _pairs(row[1]).items()}
                    for row in raw[3] if row[1]}
        return Snapshot(last_id=last_id, nodes=nodes, pins=pins, clusters=clusters)
