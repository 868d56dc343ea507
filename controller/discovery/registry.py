"""From sightings to nodes, once per machine.

A machine is known by aliases in ``keys.discovered``: ``mac:``, ``host:`` and ``node:``
(strong: the same value means the same machine) and ``ip:`` (weak: DHCP hands addresses to
others, so it only matches when nothing stronger is known). The first sighting of a machine
writes its aliases, the node (status ``discovered`` unless its agent registered it already)
and ``node.discovered`` in one transaction under WATCH; any later sighting, from any source,
address or controller replica, or after a restart, only adds aliases.

What discovery saw and what was wrong with it are kept in Redis too, for the API:
``keys.discovery_hosts`` (one summary per host) and ``keys.discovery_problems`` (capped).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import WatchError

from common import events
from common.errors import TemporaryError
from controller.discovery.recognise import Sighting, node_id_for, pi_evidence
from controller.node_status import DISCOVERED
from controller.store import Store

logger = logging.getLogger(__name__)

PROBLEMS_KEPT = 200
ATTEMPTS = 50
"""WATCH retries: the node hash also takes its agent's heartbeats, each a retry at worst."""
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Recorded:
    node_id: str
    created: bool
    """True when this sighting was the machine's first: node.discovered was emitted."""


def aliases(s: Sighting) -> tuple[list[str], list[str]]:
    strong = [f"node:{s.node_id}" if s.node_id else "", f"mac:{s.mac}" if s.mac else "",
              f"host:{s.hostname}" if s.hostname else ""]
    weak = [f"ip:{s.address}"] if s.address else []
    return [a for a in strong if a], weak


async def record(store: Store, s: Sighting, *, name: str = "", error: str = "") -> Recorded:
    """Record a sighting of a machine to be kept as a node; emits node.discovered once."""
    strong, weak = aliases(s)
    key = store.keys.discovered
    for _ in range(ATTEMPTS):
        async with store.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                node_id = await _known(pipe, key, strong, weak)
                created = node_id is None
                if node_id is None:
                    node_id = node_id_for(s, name)
                node_key = store.keys.node(node_id)
                await pipe.watch(node_key)
                exists = bool(await pipe.sismember(store.keys.nodes, node_id))
                missing = [a for a in (*strong, *weak)
                           if await pipe.hget(key, a) is None]
                pipe.multi()
                for alias in missing:
                    pipe.hset(key, alias, node_id)
                if created and not exists:
                    pipe.hset(node_key, mapping=_node_fields(s, error))
                    pipe.sadd(store.keys.nodes, node_id)
                elif exists and s.mac:
                    # A later record of a known machine may be the one that names its MAC
                    # (_workstation after _ssh); never overwrite one already learnt.
                    pipe.hsetnx(node_key, "mac", s.mac)
                if created:
                    store.stage_event(pipe, events.node_discovered(
                        node_id, s.address, s.hostname, s.source))
                await pipe.execute()
            except WatchError:
                continue
        if created:
            logger.info("discovered %s at %s (%s, %s)", node_id, s.address, s.source,
                        pi_evidence(s) or "registered by hand")
        return Recorded(node_id, created)
    raise TemporaryError(f"recording {s.address}: too much contention, try again")


async def _known(pipe: Any, key: str, strong: list[str], weak: list[str]) -> str | None:
    for group in (strong, weak):
        if not group:
            continue
        for raw in await pipe.hmget(key, group):
            if raw is not None:
                return str(raw.decode())
    return None


def _node_fields(s: Sighting, error: str) -> dict[str, str]:
    fields = {"status": DISCOVERED, "status_reason": f"found by {s.source}",
              "status_changed": f"{time.time():.3f}", "hostname": s.hostname,
              "ip_address": s.address, "source": s.source, "mac": s.mac, "model": s.model,
              "arch": s.arch, "agent_version": s.agent_version, "error": error}
    return {k: v for k, v in fields.items() if v or k == "error"}


async def forget(store: Store, node_id: str) -> None:
    """Drop a node's aliases, so the machine is discovered anew if it shows up again."""
    raw = await store.redis.hgetall(store.keys.discovered)
    doomed = [k for k, v in raw.items() if v.decode() == node_id]
    if doomed:
        await store.redis.hdel(store.keys.discovered, *doomed)


async def note_host(store: Store, s: Sighting, *, node_id: str = "") -> None:
    """Keep discovery's view of a host (Pi or not) for GET /api/v1/discovery."""
    host = s.hostname or s.address
    summary = {"host": host, "hostname": s.hostname, "address": s.address,
               "sources": sorted({s.source, *s.sources}), "mac": s.mac, "model": s.model,
               "raspberry_pi": bool(pi_evidence(s)), "evidence": pi_evidence(s),
               "node_id": node_id, "last_seen": round(time.time(), 3)}
    await store.redis.hset(store.keys.discovery_hosts, host, _json.encode(summary))


async def problem(store: Store, source: str, subject: str, reason: str) -> None:
    """A bad record or an unanswering address: logged, kept for the API, never raised."""
    logger.warning("discovery (%s): %s: %s", source, subject, reason)
    entry = {"time": round(time.time(), 3), "source": source, "subject": subject,
             "reason": reason}
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.lpush(store.keys.discovery_problems, _json.encode(entry))
        pipe.ltrim(store.keys.discovery_problems, 0, PROBLEMS_KEPT - 1)
        await pipe.execute()


async def view(store: Store) -> dict[str, Any]:
    hosts_raw = await store.redis.hgetall(store.keys.discovery_hosts)
    problems_raw = await store.redis.lrange(store.keys.discovery_problems, 0, -1)
    hosts = sorted((msgspec.json.decode(v) for v in hosts_raw.values()),
                   key=lambda h: h["host"])
    return {"hosts": hosts, "problems": [msgspec.json.decode(p) for p in problems_raw]}
