"""Controller replicas share the ingest: each holds an even share of its shards' leases, a
node's reports are applied once and in order, and a dead replica's shards move on."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import redis.asyncio as aioredis

from common import events
from common.keys import Keys
from controller.ingest import shard_of
from tests.support import processes
from tests.support.streams import stream_events
from tests.support.waiting import wait_until

KEYS = Keys()
SHARDS = 4
FAST = ["--lease-ttl", "1", "--ingest-shards", str(SHARDS), "--heartbeat-interval", "0.5",
        "--missed-heartbeats", "4"]


async def holders(redis_url: str) -> list[str | None]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.mget([KEYS.lease(f"ingest-{k}") for k in range(SHARDS)])
    finally:
        await client.aclose()
    return [r.decode() if r else None for r in raw]


async def test_two_replicas_share_the_shards_and_one_takes_over(
        redis_url: str, tmp_path: Path) -> None:
    nodes = [f"pi-s{n}" for n in range(8)]
    assert len({shard_of(n, SHARDS) for n in nodes}) == SHARDS  # every shard has work
    first = processes.controller(redis_url, tmp_path / "c1.log", extra=FAST).start()
    second = processes.controller(redis_url, tmp_path / "c2.log", extra=FAST).start()
    agents = {n: processes.agent(redis_url, n, tmp_path / f"{n}.log").start() for n in nodes}
    try:
        async def shared_evenly() -> bool:
            held = collections.Counter(await holders(redis_url))
            return None not in held and sorted(held.values()) == [2, 2]

        await wait_until(shared_evenly, 30, what="two shards per replica")

        async def all_ready() -> bool:
            found = {e.node_id for e in await stream_events(redis_url)
                     if e.type == events.NODE_STATUS_CHANGED and e.data["status"] == "ready"}
            return set(nodes) <= found

        await wait_until(all_ready, 30, what="every node ready")

        before = set(await holders(redis_url))
        first.kill()  # its shards' leases lapse; the other replica takes them all

        async def one_holder() -> bool:
            now = set(await holders(redis_url))
            return len(now) == 1 and now < before

        await wait_until(one_holder, 30, what="the survivor to hold every shard")
        for agent in agents.values():
            agent.signal(signal.SIGTERM)
        for agent in agents.values():
            assert agent.wait(15) == 0

        async def all_offline() -> bool:
            found = [e.node_id for e in await stream_events(redis_url)
                     if e.type == events.NODE_STATUS_CHANGED
                     and e.data["status"] == "offline"]
            return set(nodes) <= set(found)

        await wait_until(all_offline, 30, what="every node offline")
        stream = await stream_events(redis_url)
        for node in nodes:
            statuses = [e.data["status"] for e in stream
                        if e.type == events.NODE_STATUS_CHANGED and e.node_id == node]
            # Applied once each, in order: never doubled by the two replicas.
            assert statuses == ["ready", "offline"], (node, statuses)
            discovered = [e for e in stream
                          if e.type == events.NODE_DISCOVERED and e.node_id == node]
            assert len(discovered) == 1
    finally:
        for agent in agents.values():
            agent.stop()
        first.kill()
        second.stop()
