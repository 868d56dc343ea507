"""Heartbeats of 1,000 simulated agents against one controller.

A redis-server and the controller (a real process, liveness duty included) are started;
1,000 lightweight coroutines then each run the agent's own heartbeat loop
(``agent.node.NodePresence.heartbeat``: one pipeline of ZADD + HSET per beat), staggered
across the interval. Measured over a steady window:

- controller CPU (utime + stime from /proc/<pid>/stat) against wall time;
- Redis commands per heartbeat (INFO commandstats delta / beats sent), split into the
  agents' own share (2 per beat) and everything else (the controller: liveness, lease
  renewals, feed);
- detection delay: one agent stops beating; time from its last beat, and from the stop,
  to ``node.status.changed`` offline in the stream (expected: missed x interval + a tick).

Baseline from the same run: the controller's CPU and Redis commands with no agents at all.

Usage: .venv/bin/python bench/bench_heartbeats.py [--agents 1000] [--interval 5.0]
       [--missed 3] [--window 20]
Everything runs on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.node import NodePresence
from agent.outbox import Link, Outbox
from agent.sysinfo import NodeFacts
from common import events
from common.keys import EVENT_FIELD, Keys
from tests.support import processes
from tests.support.redis_server import RedisServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEADLINE = 300.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def command_calls(client: aioredis.Redis) -> tuple[int, int]:
    """(all commands, ZADDs) served so far; in steady state only heartbeats ZADD."""
    stats = await client.info("commandstats")
    total = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    return total, int(stats.get("cmdstat_zadd", {}).get("calls", 0))


def facts(node_id: str) -> NodeFacts:
    return NodeFacts(node_id=node_id, hostname=node_id, ip_address="127.0.0.1",
                     model="Raspberry Pi 4 Model B Rev 1.4", arch="aarch64",
                     os="Debian GNU/Linux 12 (bookworm)", kernel="6.6.51")


async def register(client: aioredis.Redis, keys: Keys, ids: list[str]) -> None:
    """What each agent's announce_ready writes, in bulk (not part of the measurement)."""
    now = time.time()
    async with client.pipeline(transaction=False) as pipe:
        for node_id in ids:
            fields = {k: str(v) for k, v in msgspec.structs.asdict(facts(node_id)).items()}
            pipe.hset(keys.node(node_id), mapping={**fields, "status": "ready",
                                                   "last_seen": f"{now:.3f}"})
            pipe.sadd(keys.nodes, node_id)
            pipe.zadd(keys.heartbeats, {node_id: now})
            pipe.xadd(keys.events, {EVENT_FIELD: events.encode(
                events.node_status_changed(node_id, "ready", None, "agent started"))})
        await pipe.execute()


async def simulated_agent(client: aioredis.Redis, keys: Keys, node_id: str,
                          interval: float) -> None:
    """The agent's own heartbeat loop, on a shared connection pool."""
    presence = NodePresence(client, keys, facts(node_id), Outbox(client, keys, Link(), size=1),
                            Link(), interval)
    await asyncio.sleep(random.uniform(0, interval))
    await presence.heartbeat()


async def measure(client: aioredis.Redis, pid: int, window: float) -> tuple[float, int, int]:
    """Controller CPU %, Redis commands and heartbeats (ZADDs) over ``window`` seconds."""
    cpu0, (calls0, beats0), t0 = cpu_seconds(pid), await command_calls(client), time.monotonic()
    await asyncio.sleep(window)
    cpu1, (calls1, beats1), t1 = cpu_seconds(pid), await command_calls(client), time.monotonic()
    return (cpu1 - cpu0) / (t1 - t0) * 100, calls1 - calls0, beats1 - beats0


async def run(agents: int, interval: float, missed: int, window: float) -> None:
    keys = Keys()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        ctl = processes.controller(server.url, Path(tmp) / "ctl.log", extra=[
            "--heartbeat-interval", str(interval), "--missed-heartbeats", str(missed),
            "--lease-ttl", "10"]).start()
        client = aioredis.Redis.from_url(server.url, max_connections=64)
        tasks: list[asyncio.Task[None]] = []
        try:
            await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
            pid = ctl.process.pid  # type: ignore[union-attr]
            await asyncio.sleep(2)
            base_cpu, base_calls, _ = await measure(client, pid, window / 2)
            print(f"baseline (no agents, {window / 2:.0f}s): controller CPU {base_cpu:.2f}%, "
                  f"Redis commands {base_calls / (window / 2):.1f}/s")

            ids = [f"sim-{i:04d}" for i in range(agents)]
            await register(client, keys, ids)
            # One connection per agent, as real agents hold; a smaller pool would
            # refuse beats (redis-py raises rather than waits) and fake missed heartbeats.
            pool = aioredis.Redis.from_url(server.url, max_connections=agents + 16)
            tasks = [asyncio.create_task(simulated_agent(pool, keys, n, interval), name=n)
                     for n in ids]
            await asyncio.sleep(2 * interval + 1)
            own0 = time.process_time()
            cpu, calls, beats = await measure(client, pid, window)
            own = (time.process_time() - own0) / window * 100
            rate = beats / window
            print(f"{agents} agents every {interval:g}s ({rate:.0f} beats/s of "
                  f"{agents / interval:.0f} intended; the simulator itself at {own:.0f}% CPU), "
                  f"{window:.0f}s window: controller CPU {cpu:.2f}%")
            if rate < 0.9 * agents / interval:
                print(f"WARNING: the simulator fell behind (load average "
                      f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): beats arrive late, "
                      "so nodes really miss heartbeats and the figures below include their "
                      "offline/ready transitions")
            others = calls - 2 * beats - (base_calls / (window / 2)) * window
            print(f"Redis commands per heartbeat: {calls / beats:.3f} in all "
                  f"(agents 2.000, controller and the rest {(calls - 2 * beats) / beats:.3f};"
                  f" above the no-agent baseline {max(others, 0) / beats:.4f})")

            # Detection delay: one agent stops.
            # Detection delay: one agent that is ready now stops.
            async with client.pipeline(transaction=False) as pipe:
                for node_id in ids[len(ids) // 2:]:
                    pipe.hget(keys.node(node_id), "status")
                statuses = await pipe.execute()
            victim = next((n for n, st in zip(ids[len(ids) // 2:], statuses, strict=True)
                           if st == b"ready"), None)
            if victim is None:
                print("detection: not measured, no node is ready (the run is overloaded)")
                return
            victim_task = next(t for t in tasks if t.get_name() == victim)
            victim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await victim_task
            stopped = time.time()
            last = await client.zscore(keys.heartbeats, victim)
            position = (await client.xrevrange(keys.events, count=1))[0][0]
            found: float | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(missed * interval * 4 + 10):
                    while found is None:
                        reply = await client.xread({keys.events: position}, block=1000)
                        for entry_id, fields in reply[0][1] if reply else []:
                            position = entry_id
                            event = events.decode(fields[EVENT_FIELD], entry_id.decode())
                            if (event.type == events.NODE_STATUS_CHANGED
                                    and event.node_id == victim
                                    and event.data["status"] == "offline"):
                                found = int(entry_id.decode().split("-")[0]) / 1000
            if found is None or last is None:
                print(f"detection: {victim} was not marked offline within "
                      f"{missed * interval * 4 + 10:g}s")
            else:
                print(f"detection: offline {found - last:.2f}s after its last beat "
                      f"({found - stopped:.2f}s after it stopped); configured {missed} x "
                      f"{interval:g}s = {missed * interval:g}s")
            offline = [e.node_id for e in (events.decode(f[EVENT_FIELD], i.decode())
                                           for i, f in await client.xrange(keys.events))
                       if e.type == events.NODE_STATUS_CHANGED and e.data["status"] == "offline"]
            print(f"offline transitions: {len(offline)} (expected 1, for {victim}: "
                  f"{offline == [victim]})")
            await pool.aclose()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
            ctl.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--missed", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(run(args.agents, args.interval, args.missed, args.window),
                                 DEADLINE))


if __name__ == "__main__":
    main()
