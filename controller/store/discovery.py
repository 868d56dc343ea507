"""What discovery saw: machines already announced, hosts seen and bad records met.

A machine is known by aliases in ``keys.discovered`` (alias -> node id): strong ones (the
same value means the same machine) and weak ones (``ip:``: DHCP hands addresses to others,
so they only match when nothing stronger is known). The first sighting of a machine writes
its aliases, its node record (status ``discovered``) and ``node.discovered`` in one
transaction under WATCH, the latter two unless its agent registered (and so announced) the
node already; any later sighting, from any source, address or controller replica, or after a
restart, only adds aliases.

``keys.discovery_hosts`` keeps one summary per host seen (Pi or not) and
``keys.discovery_problems`` the last ``PROBLEMS_KEPT`` bad records, for the API.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
from redis.asyncio.client import Pipeline

from common import events
from common.errors import ConflictError, TemporaryError
from common.redis_client import Redis
from controller.node_status import DISCOVERED
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store

PROBLEMS_KEPT = 200


class Aliases(msgspec.Struct, frozen=True):
    """The names a machine is known by (``mac:...``, ``host:...``, ``node:...``, ``ip:...``).
    """

    strong: tuple[str, ...] = ()
    """The same value means the same machine."""
    weak: tuple[str, ...] = ()
    """Matched only when no strong alias is known (addresses move between machines)."""


class DiscoveredNode(msgspec.Struct, kw_only=True, frozen=True):
    """A machine to keep as a node, as discovery saw it."""

    id: str
    """The node id if the machine is new (a known machine keeps its own)."""
    ip_address: str
    source: str
    hostname: str = ""
    mac: str = ""
    model: str = ""
    arch: str = ""
    agent_version: str = ""
    error: str = ""


class Recorded(msgspec.Struct, frozen=True):
    node_id: str
    created: bool
    """True when this sighting was the machine's first. Its node record and
    ``node.discovered`` were written then, unless its agent had registered it (and so
    announced it) already."""


class DiscoveredHost(msgspec.Struct, kw_only=True):
    """Discovery's view of one host, Pi or not (GET /api/v1/discovery)."""

    host: str
    hostname: str = ""
    address: str = ""
    sources: list[str] = []
    mac: str = ""
    model: str = ""
    raspberry_pi: bool = False
    evidence: str = ""
    """Why it looks like a Pi ("" when nothing says so)."""
    node_id: str = ""
    last_seen: float = 0.0


class DiscoveryProblem(msgspec.Struct, kw_only=True):
    """A bad record or an unanswering address."""

    time: float
    source: str
    subject: str
    reason: str


class DiscoveryView(msgspec.Struct):
    hosts: list[DiscoveredHost]
    """Sorted by host."""
    problems: list[DiscoveryProblem]
    """Newest first."""


_host_decoder = msgspec.json.Decoder(DiscoveredHost)
_problem_decoder = msgspec.json.Decoder(DiscoveryProblem)
_json = msgspec.json.Encoder()


def _node_fields(node: DiscoveredNode) -> dict[str, str]:
    fields = {"status": DISCOVERED, "status_reason": f"found by {node.source}",
              "status_changed": f"{time.time():.3f}", "hostname": node.hostname,
              "ip_address": node.ip_address, "source": node.source, "mac": node.mac,
              "model": node.model, "arch": node.arch, "agent_version": node.agent_version,
              "error": node.error}
    return {k: v for k, v in fields.items() if v or k == "error"}


class DiscoveryRecords:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    # --- machines --------------------------------------------------------------------

    async def record(self, aliases: Aliases, node: DiscoveredNode) -> Recorded:
        """Record a sighting of a machine to be kept as a node: its aliases, and on its
        first sighting the node record and ``node.discovered`` (unless the node exists
        already). Raises TemporaryError when contention won every attempt."""
        keys = self._keys
        every = (*aliases.strong, *aliases.weak)

        async def body(pipe: Pipeline) -> Recorded:
            node_id = await self._known(pipe, aliases)
            created = node_id is None
            if node_id is None:
                node_id = node.id
            node_key = keys.node(node_id)
            await pipe.watch(node_key)
            exists = bool(await pipe.sismember(keys.nodes, node_id))
            missing = [a for a in every if await pipe.hget(keys.discovered, a) is None]
            pipe.multi()
            for alias in missing:
                pipe.hset(keys.discovered, alias, node_id)
            if created and not exists:
                pipe.hset(node_key, mapping=_node_fields(node))
                pipe.sadd(keys.nodes, node_id)
                self._store.stage_event(pipe, events.node_discovered(
                    node_id, node.ip_address, node.hostname, node.source))
            elif exists and node.mac:
                # A later record of a known machine may be the one that names its MAC
                # (_workstation after _ssh); never overwrite one already learnt.
                pipe.hsetnx(node_key, "mac", node.mac)
            return Recorded(node_id, created)

        try:
            return await tx.transact(self._redis, [keys.discovered], body,
                                     what=f"discovery of {node.ip_address}")
        except ConflictError:
            raise TemporaryError(f"recording {node.ip_address}: too much contention, "
                                 "try again") from None

    async def _known(self, pipe: Pipeline, aliases: Aliases) -> str | None:
        for group in (aliases.strong, aliases.weak):
            if not group:
                continue
            for raw in await pipe.hmget(self._keys.discovered, list(group)):
                if raw is not None:
                    return str(raw.decode())
        return None

    async def forget(self, node_id: str) -> None:
        """Drop a node's aliases, so the machine is discovered anew if it shows up again."""
        raw = await self._redis.hgetall(self._keys.discovered)
        doomed = [k for k, v in raw.items() if v.decode() == node_id]
        if doomed:
            await self._redis.hdel(self._keys.discovered, *doomed)

    # --- what discovery saw, for the API ---------------------------------------------

    async def note_host(self, host: DiscoveredHost) -> None:
        await self._redis.hset(self._keys.discovery_hosts, host.host, _json.encode(host))

    async def add_problem(self, problem: DiscoveryProblem) -> None:
        """Keep a problem; only the last ``PROBLEMS_KEPT`` are."""
        key = self._keys.discovery_problems
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, _json.encode(problem))
            pipe.ltrim(key, 0, PROBLEMS_KEPT - 1)
            await pipe.execute()

    async def view(self) -> DiscoveryView:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.discovery_hosts)
            pipe.lrange(self._keys.discovery_problems, 0, -1)
            hosts_raw, problems_raw = await pipe.execute()
        hosts = sorted((_host_decoder.decode(v) for v in hosts_raw.values()),
                       key=lambda h: h.host)
        return DiscoveryView(hosts=hosts,
                             problems=[_problem_decoder.decode(p) for p in problems_raw])
