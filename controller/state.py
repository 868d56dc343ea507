"""State in Redis: reads for REST and snapshots, and the one way to write state with its event.

Every change of state and its event go in one MULTI/EXEC (``commit``), so a client that reads
REST and then follows /ws sees neither a gap nor a double.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline

from common import events, gpio
from common.keys import EVENT_FIELD, Keys
from common.redis_client import Redis

Staged = Callable[[Pipeline], None]
"""A state write to stage inside the transaction (e.g. ``lambda p: p.hset(...)``)."""


class Node(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    status: str = "unknown"
    hostname: str = ""
    ip_address: str = ""
    model: str = ""
    arch: str = ""
    os: str = ""
    kernel: str = ""
    agent_version: str = ""
    gpio_backend: str = ""
    last_seen: float | None = None
    labels: dict[str, str] = {}
    maintenance: bool = False
    source: str = ""
    mac: str = ""
    status_reason: str = ""
    error: str = ""


_node_fields = {f for f in Node.__struct_fields__ if f != "id"}


def node_from_hash(node_id: str, raw: dict[bytes, bytes], last_beat: float | None = None
                   ) -> Node:
    """The node record; ``last_seen`` is its last heartbeat as the controller saw it."""
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        if name not in _node_fields:
            continue
        text = value.decode(errors="replace")
        if name == "last_seen":
            fields[name] = float(text) if text else None
        elif name == "labels":
            fields[name] = msgspec.json.decode(value) if value else {}
        elif name == "maintenance":
            fields[name] = text in ("1", "true")
        else:
            fields[name] = text
    if last_beat is not None:
        fields["last_seen"] = float(last_beat)
    return Node(id=node_id, **fields)


_APPEND_EVENTS = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
return #ARGV - 1
"""
"""Many events in one command: the same XADDs, without a client round of work per event."""


class Store:
    def __init__(self, redis: Redis, keys: Keys, *, stream_maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_maxlen = stream_maxlen

    def stage_event(self, pipe: Pipeline, event: events.Event) -> None:
        pipe.xadd(self.keys.events, {EVENT_FIELD: events.encode(event)},
                  maxlen=self.stream_maxlen, approximate=True)

    def stage_events(self, pipe: Pipeline, batch: Sequence[events.Event]) -> None:
        """Append several events, in order, inside the caller's transaction."""
        if len(batch) <= 1:
            for event in batch:
                self.stage_event(pipe, event)
            return
        pipe.eval(_APPEND_EVENTS, 1, self.keys.events, self.stream_maxlen,
                  *map(events.encode, batch))

    async def commit(self, writes: Sequence[Staged], event: events.Event | None) -> str | None:
        """Apply state writes and append their event atomically; returns the event's id."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for write in writes:
                write(pipe)
            if event is not None:
                self.stage_event(pipe, event)
            result = await pipe.execute()
        if event is None:
            return None
        entry_id = result[-1]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def emit(self, event: events.Event) -> str | None:
        return await self.commit((), event)

    # --- nodes -----------------------------------------------------------------------

    async def node_ids(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(self.keys.nodes))

    async def nodes(self) -> list[Node]:
        ids = await self.node_ids()
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(self.keys.node(node_id))
            pipe.zmscore(self.keys.heartbeats, ids)
            *rows, beats = await pipe.execute()
        return [node_from_hash(i, r, beat) for i, r, beat in zip(ids, rows, beats, strict=True)
                if r]

    async def node(self, node_id: str) -> Node | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.node(node_id))
            pipe.zscore(self.keys.heartbeats, node_id)
            raw, beat = await pipe.execute()
        return node_from_hash(node_id, raw, beat) if raw else None

    # --- GPIO resources ----------------------------------------------------------------

    async def gpio_names(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(self.keys.gpio_index))

    async def gpio_pins(self, names: Sequence[str] | None = None) -> list[gpio.GpioPin]:
        names = await self.gpio_names() if names is None else names
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.keys.gpio(name), "resource", "status")
            rows = await pipe.execute()
        return [with_status(r[0], r[1]) for r in rows if r[0]]

    async def snapshot(self) -> Snapshot:
        return await snapshot(self)

    async def gpio_pin(self, name: str) -> gpio.GpioPin | None:
        resource, status = await self.redis.hmget(self.keys.gpio(name), "resource", "status")
        return with_status(resource, status) if resource else None


_status_decoder = msgspec.json.Decoder(gpio.GpioStatus)


def with_status(resource: bytes, status: bytes | None) -> gpio.GpioPin:
    """The stored resource with the agent's reported status; Pending until it catches up."""
    pin = gpio.decode_pin(resource)
    reported = _status_decoder.decode(status) if status else gpio.GpioStatus()
    if reported.observed_generation < pin.metadata.generation and reported.phase != "Error":
        reported.phase = "Pending"
        reported.message = reported.message or "waiting for the node's agent to apply it"
    elif reported.phase == "Error" and reported.observed_generation < pin.metadata.generation:
        reported.phase = "Pending"
    pin.status = reported
    return pin


def now() -> float:
    return time.time()


_SNAPSHOT_LUA = """
local p = ARGV[1]
local last = redis.call('XREVRANGE', p .. 'events', '+', '-', 'COUNT', 1)
local result = {#last > 0 and last[1][1] or '0-0'}
local kinds = {{'nodes', 'node:'}, {'gpio', 'gpio:'}, {'clusters', 'cluster:'}}
for _, kind in ipairs(kinds) do
  local rows = {}
  for _, member in ipairs(redis.call('SMEMBERS', p .. kind[1])) do
    rows[#rows + 1] = {member, redis.call('HGETALL', p .. kind[2] .. member),
                       redis.call('ZSCORE', p .. 'heartbeats', member)}
  end
  result[#result + 1] = rows
end
return result
"""


class Snapshot(msgspec.Struct):
    last_id: str
    nodes: list[Node]
    pins: list[gpio.GpioPin]
    clusters: dict[str, dict[str, str]]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def snapshot(store: Store) -> Snapshot:
    """Everything, read in one atomic step with the id of the last event it reflects."""
    raw = await store.redis.eval(_SNAPSHOT_LUA, 0, store.keys.prefix)
    last_id = raw[0].decode()
    nodes = sorted((node_from_hash(m.decode(), _pairs(h), float(beat) if beat else None)
                    for m, h, beat in raw[1] if h), key=lambda n: n.id)
    pins = []
    for _member, flat, _ in raw[2]:
        fields = _pairs(flat)
        if b"resource" in fields:
            pins.append(with_status(fields[b"resource"], fields.get(b"status")))
    pins.sort(key=lambda p: p.metadata.name)
    clusters = {m.decode(): {k.decode(): v.decode() for k, v in _pairs(h).items()}
                for m, h, _ in raw[3] if h}
    return Snapshot(last_id=last_id, nodes=nodes, pins=pins, clusters=clusters)
