"""Agents' reports: their ingress streams (``pic:in:{node}``, consumer group ``controller``),
the rings that say which stream has news, and the one transaction in which a batch of
reports becomes state, events, dead letters and acknowledgements.

What a report means is decided by ``controller.ingest``; this module reads what it needs
under WATCH (``Views``), asks it for a ``Plan``, and writes the plan with the reports'
XACK and XDEL in one MULTI/EXEC: a report is applied exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from common import events, gpio, reports
from common.keys import INGEST_GROUP
from common.redis_client import Redis
from controller.store import tx
from controller.store.eventlog import DEAD_LETTER_MAXLEN

if TYPE_CHECKING:
    from controller.store.core import Store

RAW_KEPT = 1024
"""Bytes of a rejected entry kept in its dead letter."""


@dataclass(slots=True)
class Entry:
    """One ingress entry, and what became of it."""

    node_id: str
    stream: str
    entry_id: bytes
    raw: bytes
    report: reports.AnyReport | None = None
    rejection: str | None = None


@dataclass(slots=True)
class NodeView:
    status: str | None
    """None: the node is not registered."""
    maintenance: bool


@dataclass(slots=True)
class PinView:
    node_id: str
    pin: int | None
    generation: int


@dataclass(slots=True)
class Views:
    """What the reports of a batch may depend on, read under WATCH."""

    nodes: dict[str, NodeView]
    pins: dict[str, PinView | None]


@dataclass(slots=True)
class DeadLetter:
    stream: str
    entry_id: str
    node_id: str
    reason: str
    raw: bytes


@dataclass(slots=True)
class Plan:
    """Everything a batch of reports changes, applied in one transaction."""

    node_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    new_nodes: list[str] = field(default_factory=list)
    beats: dict[str, float] = field(default_factory=dict)
    """Heartbeat time per node (a started agent)."""
    stopped: set[str] = field(default_factory=set)
    """Nodes whose agent stopped cleanly: no heartbeat to judge any more."""
    metrics: dict[str, list[bytes]] = field(default_factory=dict)
    """Health reports per node, oldest first."""
    gpio_status: dict[str, bytes] = field(default_factory=dict)
    events: list[events.Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def set_fields(self, node_id: str, fields: dict[str, str]) -> None:
        self.node_fields.setdefault(node_id, {}).update(fields)

    def beat(self, node_id: str, now: float) -> None:
        self.beats[node_id] = now
        self.stopped.discard(node_id)

    def stop(self, node_id: str) -> None:
        self.stopped.add(node_id)
        self.beats.pop(node_id, None)


Decide = Callable[[Sequence[Entry], Views], Plan]


class Rings:
    """Which agents rang: their node ids, as the pub/sub messages arrive."""

    def __init__(self, pubsub: object, prefix: str) -> None:
        self._pubsub = pubsub
        self._prefix = prefix

    async def wait(self, timeout: float) -> set[str] | None:
        """The nodes that rang, once one has (and any others already queued); None when
        none rang within ``timeout`` seconds."""
        first = await self._pubsub.get_message(timeout=timeout)  # type: ignore[attr-defined]
        if first is None:
            return None
        rung = {first["channel"].decode().removeprefix(self._prefix)}
        while (more := await self._pubsub.get_message(timeout=0)) is not None:  # type: ignore[attr-defined]
            rung.add(more["channel"].decode().removeprefix(self._prefix))
        return rung


class Ingress:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    @contextlib.asynccontextmanager
    async def rings(self) -> AsyncIterator[Rings]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(self._keys.rings)
            yield Rings(pubsub, self._keys.ring(""))
        finally:
            await pubsub.aclose()

    async def read(self, streams: dict[str, str], position: str, count: int, consumer: str
                   ) -> tuple[list[Entry], list[str]]:
        """Entries of ``streams`` (stream -> node id) from ``position`` (">" new, "0" read
        before by ``consumer`` but not acknowledged); and the streams worth reading again
        (more waiting)."""
        try:
            reply = await self._redis.xreadgroup(
                INGEST_GROUP, consumer, dict.fromkeys(streams, position), count=count)
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            # A stream or its group vanished (Redis flushed, restored from an old backup):
            # re-create them; what the agents append from now on is read.
            for stream in streams:
                with contextlib.suppress(ResponseError):
                    await self._redis.xgroup_create(stream, INGEST_GROUP, id="0",
                                                    mkstream=True)
            return [], []
        batch: list[Entry] = []
        again: list[str] = []
        for raw_stream, items in reply or ():
            stream = raw_stream.decode()
            node_id = streams.get(stream)
            if node_id is None:
                continue
            if items and (position == "0" or len(items) >= count):
                again.append(stream)
            for entry_id, fields in items:
                # None: trimmed away while pending; it is acknowledged as a dead letter.
                batch.append(Entry(node_id, stream, entry_id,
                                   (fields or {}).get(reports.REPORT_FIELD) or b""))
        return batch, again

    async def apply(self, batch: Sequence[Entry], decide: Decide) -> Plan:
        """Apply ``decide``'s plan for ``batch`` with the batch's acknowledgement."""
        keys = self._keys
        nodes = sorted({e.node_id for e in batch if e.report is not None})
        pins = sorted({e.report.resource for e in batch
                       if isinstance(e.report, reports.GpioReport)})

        async def body(pipe: Pipeline) -> Plan:
            views = Views({n: await self._node_view(pipe, n) for n in nodes},
                          {p: await self._pin_view(pipe, p) for p in pins})
            plan = decide(batch, views)
            pipe.multi()
            self._stage(pipe, plan)
            by_stream: dict[str, list[bytes]] = {}
            for entry in batch:
                by_stream.setdefault(entry.stream, []).append(entry.entry_id)
            for stream, ids in by_stream.items():
                pipe.xack(stream, INGEST_GROUP, *ids)
                pipe.xdel(stream, *ids)
            return plan

        watch = [keys.node(n) for n in nodes] + [keys.gpio(p) for p in pins]
        return await tx.transact(self._redis, watch, body, what="agent reports")

    def _stage(self, pipe: Pipeline, plan: Plan) -> None:
        keys, history = self._keys, self._store.metrics_history
        for node_id, fields in plan.node_fields.items():
            pipe.hset(keys.node(node_id), mapping=fields)
        if plan.new_nodes:
            pipe.sadd(keys.nodes, *plan.new_nodes)
        if plan.beats:
            pipe.zadd(keys.heartbeats, plan.beats)
        if plan.stopped:
            pipe.zrem(keys.heartbeats, *plan.stopped)
        for node_id, values in plan.metrics.items():
            pipe.lpush(keys.node_metrics(node_id), *values)
            pipe.ltrim(keys.node_metrics(node_id), 0, history - 1)
        for name, status in plan.gpio_status.items():
            pipe.hset(keys.gpio(name), "status", status)
        self._store.stage_events(pipe, plan.events)
        for dead in plan.dead_letters:
            pipe.xadd(keys.dead_letters, {
                b"stream": dead.stream, b"id": dead.entry_id, b"node": dead.node_id,
                b"reason": dead.reason, b"raw": dead.raw[:RAW_KEPT]},
                maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        if plan.dead_letters:
            pipe.incrby(keys.dead_letter_count, len(plan.dead_letters))

    async def _node_view(self, pipe: Pipeline, node_id: str) -> NodeView:
        status, maintenance = await pipe.hmget(self._keys.node(node_id), "status",
                                               "maintenance")
        return NodeView(status.decode() if status else None, maintenance == b"1")

    async def _pin_view(self, pipe: Pipeline, name: str) -> PinView | None:
        raw = await pipe.hget(self._keys.gpio(name), "resource")
        if raw is None:
            return None
        try:
            pin = gpio.decode_pin(raw)
        except ValueError:
            return None
        return PinView(pin.spec.node_name, pin.spec.pin, pin.metadata.generation)
