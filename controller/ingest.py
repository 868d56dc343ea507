"""Ingest: the controller turns what agents report into state and canonical events.

Agents are untrusted tenants: each appends reports (``common.reports``) to its own ingress
stream and can write nothing else. This duty reads every enrolled node's ingress stream
through the ``controller`` consumer group, checks each report, and writes the state change,
the canonical event on ``pic:events`` and the acknowledgement of the report in one
MULTI/EXEC, so a report is applied exactly once (a new lease holder first re-reads what the
previous one read but did not acknowledge) and in the order its node sent it.

Agents ring their own pub/sub channel in the transaction that appends a report, so the
duty reads just the streams that rang; every few seconds of quiet it reads them all (a ring
can be lost; the streams are the truth).

A report is rejected, never applied, when it cannot be decoded, is oversized, is of an
unknown kind, speaks for another node, concerns a GPIO resource that is not its node's (or
a pin or generation that resource does not have), or comes faster than ``agent_max_rate``.
A rejected report goes to the dead-letter stream with its reason and is counted; the first
rejection of a burst raises one ``system.log.created`` warning naming the node; nothing of it
reaches state or ``/ws``.

The nodes are split into ``ingest_shards`` shards (by a hash of the node id), each read under
a lease of its own by one replica at a time, and replicas take an even share of the shards:
several replicas share the work, and a node's reports are applied in the order they were sent
(input edges alternate), which a consumer group read by all replicas at once would not keep.
A shard's lease moves to another replica within one TTL when its holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from common import events, grammar, reports
from common.errors import ConflictError, DecodeError
from common.keys import INGEST_CONSUMER
from common.redis_client import UNAVAILABLE
from common.tasks import checkpoint
from controller import node_status
from controller.store import Store
from controller.store.agents import AgentAccess
from controller.store.gpio import encode_status
from controller.store.ingress import DeadLetter, Entry, NodeView, PinView, Plan, Views

logger = logging.getLogger(__name__)

SWEEP_SECONDS: Final = 5.0
"""When no agent rings for this long, every enrolled stream is read anyway and the set of
enrolled nodes is checked: what a lost ring left behind waits at most this long."""
WARN_EVERY: Final = 10.0
"""Seconds between two warnings about the same node's rejected reports (one per burst)."""
MAX_TEXT: Final = 2000
"""Longest log message kept from an agent, in characters."""
MAX_METRICS: Final = 64
LEVELS: Final = frozenset(("debug", "info", "warning", "error", "critical"))


class Rejected(Exception):
    """A report that must not be applied; the message is the dead letter's reason."""


class RateLimit:
    """Token bucket per node: ``rate`` reports a second on average, bursts of 10 s of it."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(rate * 10, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, node_id: str) -> bool:
        now = self._clock()
        tokens, then = self._buckets.get(node_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[node_id] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


def shard_of(node_id: str, shards: int) -> int:
    """The ingest shard that reads a node's reports: always the same one, so they stay in
    order."""
    return zlib.crc32(node_id.encode()) % shards


class Bells:
    """One subscription to every agent's ring per process, shared by the shards this replica
    holds: each ring is read once, however many shards there are, and goes to its shard."""

    def __init__(self, store: Store, shards: int) -> None:
        self._store = store
        self._shards = shards
        self._pending: dict[int, set[str]] = {}
        self._rung: dict[int, asyncio.Event] = {}

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self._store.ingress.rings() as rings:
                    delay = 0.1
                    while True:
                        nodes = await rings.wait(60.0)
                        for node in nodes or ():
                            shard = shard_of(node, self._shards)
                            if shard in self._rung:
                                self._pending[shard].add(node)
                                self._rung[shard].set()
            except UNAVAILABLE:
                # Rings sent meanwhile are lost; the shards' sweeps read what they announced.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def wait(self, shard: int, timeout: float) -> set[str] | None:
        """The nodes of ``shard`` that rang since the last call; None after ``timeout``
        seconds without one."""
        rung = self._rung.setdefault(shard, asyncio.Event())
        self._pending.setdefault(shard, set())
        try:
            async with asyncio.timeout(timeout):
                await rung.wait()
        except TimeoutError:
            return None
        rung.clear()
        nodes, self._pending[shard] = self._pending[shard], set()
        return nodes

    def leave(self, shard: int) -> None:
        """This replica no longer reads ``shard``."""
        self._rung.pop(shard, None)
        self._pending.pop(shard, None)


class Ingest:
    """One shard of the ingest: the nodes with ``shard_of(node) == shard``."""

    def __init__(self, store: Store, access: AgentAccess, bells: Bells, *, max_rate: float,
                 batch: int, shard: int = 0, shards: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._bells = bells
        self._shard = shard
        self._shards = shards
        self._consumer = f"{INGEST_CONSUMER}-{shard}"
        self._keys = store.keys
        self._access = access
        self._rates = RateLimit(max_rate)
        self._batch = batch
        self._clock = clock
        self._warned: dict[str, float] = {}
        self._warning: dict[str, float] = {}
        """Warnings of the batch being decided; kept once it is applied (a retried
        transaction decides again and must warn again)."""
        self._streams: dict[str, str] = {}
        self._version: int | None = None
        self.applied = 0
        self.rejected = 0

    # --- reading -----------------------------------------------------------------------

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._refresh(force=True)
                restored = await self._access.apply_all(set(self._streams.values()))
                if self._shard == 0 and await self._store.gpio.rebuild_desired():
                    logger.info("ingest: filled in nodes' declared GPIO state")
                logger.info("ingest shard %d of %d: reading the reports of %d node(s)",
                            self._shard, self._shards, restored)
                await self._listen()
            except UNAVAILABLE as err:
                logger.debug("ingest: Redis unavailable (%s)", type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _listen(self) -> None:
        """Read the streams that ring; every SWEEP_SECONDS all of them (a ring is a hint
        that may be lost while this process reconnects, the streams are the truth)."""
        try:
            await self._refresh(force=True)
            await self._read(list(self._streams), "0")  # read by a previous holder, not applied
            await self._read(list(self._streams), ">")
            while True:
                checkpoint()
                nodes = await self._bells.wait(self._shard, SWEEP_SECONDS)
                if nodes is None:
                    await self._refresh()
                    await self._read(list(self._streams), ">")
                    continue
                if not nodes <= set(self._streams.values()):
                    await self._refresh(force=True)
                await self._read([self._keys.ingress(n) for n in sorted(nodes)
                                  if self._keys.ingress(n) in self._streams], ">")
        finally:
            self._bells.leave(self._shard)

    async def _refresh(self, *, force: bool = False) -> None:
        version = await self._access.version()
        if self._shard == 0:  # once per sweep, not per shard: it covers every agent
            await self._access.sync_replicas()
        if not force and version == self._version:
            # Redis may have restarted (ACL users live in memory only): put them back.
            await self._access.repair(sorted(self._streams.values()))
            return
        self._version = version
        enrolled = [n for n in await self._access.enrolled()
                    if shard_of(n, self._shards) == self._shard]
        await self._access.repair(enrolled)
        self._streams = {self._keys.ingress(n): n for n in enrolled}

    async def _read(self, streams: list[str], position: str) -> None:
        """Apply what ``streams`` hold from ``position`` (">" new entries, "0" this
        consumer's unacknowledged ones), batch by batch until none is left."""
        while streams:
            batch, streams = await self._store.ingress.read(
                {s: self._streams[s] for s in streams if s in self._streams}, position,
                self._batch, self._consumer)
            if batch:
                await self.apply(batch)

    # --- applying ----------------------------------------------------------------------

    async def apply(self, batch: list[Entry]) -> None:
        for entry in batch:
            self._decode(entry)
        while True:
            try:
                plan = await self._store.ingress.apply(batch, self._decide)
                break
            except ConflictError:
                await asyncio.sleep(0.05)
        self._warned.update(self._warning)
        rejected = sum(e.rejection is not None for e in batch)
        self.applied += len(batch) - rejected
        self.rejected += rejected
        for line in plan.log:
            logger.info("%s", line)

    def _decide(self, batch: Sequence[Entry], views: Views) -> Plan:
        self._warning = {}
        plan = Plan()
        for entry in batch:
            first = len(plan.events)
            self._plan(entry, plan, views)
            stamp = _observed_at(entry.report)
            for event in plan.events[first:]:
                event.timestamp = min(event.timestamp, stamp or event.timestamp)
        return plan

    def _decode(self, entry: Entry) -> None:
        entry.report, entry.rejection = None, None
        if not self._rates.allow(entry.node_id):
            entry.rejection = "rate limit: more reports than agent_max_rate allows"
            return
        if not entry.raw:
            entry.rejection = f"missing field {reports.REPORT_FIELD.decode()!r}"
            return
        try:
            entry.report = reports.decode(entry.raw)
        except DecodeError as err:
            entry.rejection = str(err)

    def _plan(self, entry: Entry, plan: Plan, views: Views) -> None:
        if entry.report is not None:
            entry.rejection = None  # decided afresh when a contended transaction runs again
            try:
                self._plan_report(entry.node_id, entry.report, plan, views)
                return
            except Rejected as err:
                entry.rejection = str(err)
        plan.dead_letters.append(DeadLetter(
            entry.stream, entry.entry_id.decode(), entry.node_id,
            entry.rejection or "rejected", entry.raw))
        logger.debug("report %s of node %s dead-lettered: %s", entry.entry_id.decode(),
                     entry.node_id, entry.rejection)
        self._maybe_warn(entry, plan)

    def _plan_report(self, node_id: str, report: reports.AnyReport, plan: Plan,
                     views: Views) -> None:
        view, now = views.nodes[node_id], self._clock()
        if isinstance(report, reports.Started):
            self._plan_started(node_id, report, plan, view, now)
            return
        if view.status is None:
            raise Rejected(f"node {node_id} has not registered (no 'started' report yet)")
        if isinstance(report, reports.Stopping):
            plan.stop(node_id)
            if view.status not in (node_status.MAINTENANCE, node_status.OFFLINE):
                self._transition(plan, node_id, view, node_status.OFFLINE,
                                 _text(report.reason), now)
        elif isinstance(report, reports.Health):
            if len(report.metrics) > MAX_METRICS:
                raise Rejected(f"health report with {len(report.metrics)} metrics "
                               f"(at most {MAX_METRICS})")
            plan.metrics.setdefault(node_id, []).append(msgspec.json.encode(report.metrics))
            plan.events.append(events.node_health_reported(node_id, report.metrics))
        elif isinstance(report, reports.GpioReport):
            self._plan_gpio(node_id, report, plan, views.pins.get(report.resource))
        elif isinstance(report, reports.LogLine):
            if report.level not in LEVELS:
                raise Rejected(f"unknown log level {report.level!r}")
            source = _text(report.source, 100)
            plan.events.append(events.system_log_created(
                report.level, _text(report.message),  # type: ignore[arg-type]
                source=source if source.startswith("agent/") else f"agent/{source}",
                node_id=node_id))
        elif isinstance(report, reports.CommandRejected):
            plan.dead_letters.append(DeadLetter(
                self._keys.commands(node_id), _text(report.entry_id, 40), node_id,
                f"agent could not decode the command: {_text(report.reason)}", report.raw))

    def _plan_started(self, node_id: str, report: reports.Started, plan: Plan,
                      view: NodeView, now: float) -> None:
        facts = report.facts
        if facts.node_id != node_id:
            raise Rejected(f"node {node_id} reported facts for node {facts.node_id!r}")
        fields = _checked_facts(facts)
        plan.set_fields(node_id, fields)
        plan.beat(node_id, now)
        reason = _text(report.reason)
        if view.status is None:
            plan.new_nodes.append(node_id)
            plan.set_fields(node_id, {"source": "agent"})
            plan.events.append(events.node_discovered(node_id, fields["ip_address"],
                                                      fields["hostname"], source="agent"))
        target = node_status.MAINTENANCE if view.maintenance else node_status.READY
        if view.status != target:
            self._transition(plan, node_id, view, target, reason, now)

    def _transition(self, plan: Plan, node_id: str, view: NodeView, status: str,
                    reason: str, now: float) -> None:
        previous = view.status
        plan.set_fields(node_id, {"status": status, "status_reason": reason,
                                  "status_changed": f"{now:.3f}"})
        plan.events.append(events.node_status_changed(node_id, status, previous, reason=reason))
        plan.log.append(f"node {node_id}: {previous} -> {status} ({reason})")
        view.status = status

    def _plan_gpio(self, node_id: str, report: reports.GpioReport, plan: Plan,
                   pin: PinView | None) -> None:
        name, status = report.resource, report.status
        if pin is None:
            raise Rejected(f"node {node_id} reported GPIO resource {name!r}, which does not "
                           "exist")
        if pin.node_id != node_id:
            raise Rejected(f"node {node_id} reported GPIO resource {name!r} of node "
                           f"{pin.node_id}")
        if report.pin != pin.pin:
            raise Rejected(f"node {node_id} reported BCM {report.pin} for {name!r}, which is "
                           f"on BCM {pin.pin}")
        if status.observed_generation > pin.generation:
            raise Rejected(f"node {node_id} reported generation {status.observed_generation} "
                           f"of {name!r}, ahead of the declared {pin.generation}")
        if report.announce and status.state is None:
            raise Rejected(f"node {node_id} announced {name!r} without a state")
        plan.gpio_status[name] = encode_status(status)
        if report.announce:
            assert status.state is not None
            plan.events.append(events.gpio_state_changed(
                name, node_id, report.pin, status.state, status.pwm_duty,
                actor=status.last_changed_by, request_id=status.request_id,
                reason=report.reason))

    def _maybe_warn(self, entry: Entry, plan: Plan) -> None:
        now = time.monotonic()
        last = max(self._warned.get(entry.node_id, float("-inf")),
                   self._warning.get(entry.node_id, float("-inf")))
        if now - last < WARN_EVERY:
            return
        self._warning[entry.node_id] = now
        message = (f"rejected a report from node {entry.node_id}: {entry.rejection} "
                   f"(further rejections in the next {WARN_EVERY:g} s are only counted)")
        logger.warning("%s", message)
        plan.events.append(events.system_log_created(
            "warning", message, source="controller/ingest", node_id=entry.node_id))


_ISO_UTC: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _observed_at(report: reports.AnyReport | None) -> str | None:
    """The agent's time of the fact when well-formed; the caller keeps it from the future."""
    at = report.at if report is not None else None
    return at if at is not None and _ISO_UTC.match(at) else None


def _text(value: str, limit: int = MAX_TEXT) -> str:
    """Agent text as we store it: bounded, without control characters."""
    return "".join(c if c.isprintable() else " " for c in value[:limit])


_FACT_LIMITS: Final = {"hostname": 253, "model": 120, "arch": 32, "os": 120, "kernel": 120,
                       "agent_version": 40, "gpio_backend": 16}


def _checked_facts(facts: reports.NodeFacts) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, limit in _FACT_LIMITS.items():
        value: str = getattr(facts, name)
        if len(value) > limit or not value.isprintable():
            raise Rejected(f"{name} must be printable and at most {limit} characters")
        fields[name] = value
    if facts.hostname and not grammar.is_hostname(facts.hostname):
        raise Rejected(f"hostname {facts.hostname[:60]!r} is not a host name")
    address = facts.ip_address
    if address:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(address)
            fields["ip_address"] = address
        if "ip_address" not in fields:
            raise Rejected(f"ip_address {address[:60]!r} is not an IP address")
    else:
        fields["ip_address"] = ""
    return fields
