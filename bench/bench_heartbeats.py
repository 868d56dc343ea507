"""Heartbeats of 1,000 simulated agents against one controller.

A redis-server and the controller (a real process, liveness duty included) are started;
1,000 lightweight coroutines then each run the agent's own heartbeat loop
(``agent.node.NodePresence.heartbeat``), staggered across the interval. Measured over a
steady window:

- controller CPU (utime + stime from /proc/<pid>/stat) against wall time;
- Redis commands per heartbeat (INFO commandstats delta / beats sent), split into the
  agents' own share and everything else (the controller: liveness, ingest, lease renewals);
- detection delay: one agent stops beating; time from its last beat, and from the stop,
  to ``node.status.changed`` offline in the stream (expected: missed x interval + a tick).

It measures this checkout ("ours": each agent is its own Redis user and rewrites its own
``alive`` key, one SET per beat, which the controller's liveness reads in one MGET per
tick; the controller also reads the 1,000 agents' ingress streams) and, in the same run,
the previous design ("before", revision --baseline, extracted with ``git archive``: agents
ZADD + HSET shared keys with the controller's credentials), alternating, --reps times each.
Each also reports the controller's CPU with no agents at all.

Usage: .venv/bin/python bench/bench_heartbeats.py [--agents 1000] [--interval 5.0]
       [--missed 3] [--window 20] [--reps 3]
Everything runs on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _trees
import msgspec
import redis.asyncio as aioredis

_trees.use_tree()

from agent.node import NodePresence  # noqa: E402
from agent.outbox import Link, Outbox  # noqa: E402
from common import events  # noqa: E402
from common.keys import EVENT_FIELD, Keys  # noqa: E402
from tests.support import processes  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

CONFINED = hasattr(Keys, "alive")
"""Agents as confined tenants (this checkout), or the previous design."""
if CONFINED:
    from common.reports import NodeFacts, Started, encode
    from controller.store.agents import AgentAccess
else:
    from agent.sysinfo import NodeFacts  # type: ignore[no-redef,attr-defined]

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEADLINE = 300.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


BEAT_COMMAND = "cmdstat_set" if CONFINED else "cmdstat_zadd"
AGENT_COMMANDS_PER_BEAT = 1 if CONFINED else 2


async def command_calls(client: aioredis.Redis) -> tuple[int, int]:
    """(all commands, heartbeats) served so far: in steady state only a heartbeat SETs (or,
    before, ZADDs)."""
    stats = await client.info("commandstats")
    total = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    return total, int(stats.get(BEAT_COMMAND, {}).get("calls", 0))


def facts(node_id: str) -> NodeFacts:
    return NodeFacts(node_id=node_id, hostname=node_id, ip_address="127.0.0.1",
                     model="Raspberry Pi 4 Model B Rev 1.4", arch="aarch64",
                     os="Debian GNU/Linux 12 (bookworm)", kernel="6.6.51")


async def register(client: aioredis.Redis, keys: Keys, ids: list[str], url: str
                   ) -> dict[str, str]:
    """Each agent's registration, in bulk (not part of the measurement); the URL each agent
    connects with."""
    if CONFINED:
        access = AgentAccess(client, keys, redis_url=url, agent_address="")
        urls = {n: (await access.issue(n)).redis_url for n in ids}
        for node_id in ids:
            own = aioredis.Redis.from_url(urls[node_id])
            await own.xadd(keys.ingress(node_id), {b"r": encode(Started(facts=facts(node_id)))})
            await own.aclose()
        async with asyncio.timeout(120):
            while await client.scard(keys.nodes) < len(ids):
                await asyncio.sleep(0.2)
        return urls
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
    return dict.fromkeys(ids, url)


async def simulated_agent(url: str, keys: Keys, node_id: str, interval: float) -> None:
    """The agent's own heartbeat loop, on its own connection (its own Redis user)."""
    client = aioredis.Redis.from_url(url, max_connections=2)
    outbox = (Outbox(client, keys, node_id, Link(), size=1) if CONFINED  # type: ignore[call-arg]
              else Outbox(client, keys, Link(), size=1))  # type: ignore[call-arg,arg-type]
    presence = NodePresence(client, keys, facts(node_id), outbox, Link(), interval)
    await asyncio.sleep(random.uniform(0, interval))
    try:
        await presence.heartbeat()
    finally:
        await client.aclose()


async def measure(client: aioredis.Redis, pid: int, window: float) -> tuple[float, int, int]:
    """Controller CPU %, Redis commands and heartbeats (ZADDs) over ``window`` seconds."""
    cpu0, (calls0, beats0), t0 = cpu_seconds(pid), await command_calls(client), time.monotonic()
    await asyncio.sleep(window)
    cpu1, (calls1, beats1), t1 = cpu_seconds(pid), await command_calls(client), time.monotonic()
    return (cpu1 - cpu0) / (t1 - t0) * 100, calls1 - calls0, beats1 - beats0


async def run(agents: int, interval: float, missed: int, window: float) -> dict[str, Any]:
    keys = Keys()
    result: dict[str, Any] = {}
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
            result["idle_cpu_pct"] = base_cpu
            print(f"baseline (no agents, {window / 2:.0f}s): controller CPU {base_cpu:.2f}%, "
                  f"Redis commands {base_calls / (window / 2):.1f}/s")

            ids = [f"sim-{i:04d}" for i in range(agents)]
            urls = await register(client, keys, ids, server.url)
            # One connection per agent, as real agents hold.
            tasks = [asyncio.create_task(simulated_agent(urls[n], keys, n, interval), name=n)
                     for n in ids]
            await asyncio.sleep(2 * interval + 1)
            own0 = time.process_time()
            cpu, calls, beats = await measure(client, pid, window)
            own = (time.process_time() - own0) / window * 100
            rate = beats / window
            result.update(cpu_pct=cpu, beats_per_s=rate)
            print(f"{agents} agents every {interval:g}s ({rate:.0f} beats/s of "
                  f"{agents / interval:.0f} intended; the simulator itself at {own:.0f}% CPU), "
                  f"{window:.0f}s window: controller CPU {cpu:.2f}%")
            if rate < 0.9 * agents / interval:
                print(f"WARNING: the simulator fell behind (load average "
                      f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): beats arrive late, "
                      "so nodes really miss heartbeats and the figures below include their "
                      "offline/ready transitions")
            own_calls = AGENT_COMMANDS_PER_BEAT * beats
            others = calls - own_calls - (base_calls / (window / 2)) * window
            result["commands_per_beat"] = calls / beats
            print(f"Redis commands per heartbeat: {calls / beats:.3f} in all "
                  f"(agents {AGENT_COMMANDS_PER_BEAT:.3f}, controller and the rest "
                  f"{(calls - own_calls) / beats:.3f}; above the no-agent baseline "
                  f"{max(others, 0) / beats:.4f})")

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
                return result
            victim_task = next(t for t in tasks if t.get_name() == victim)
            victim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await victim_task
            stopped = time.time()
            position = (await client.xrevrange(keys.events, count=1))[0][0]
            # Read its last heartbeat once the liveness tick that follows the stop has run:
            # by then a beat sent just before the stop is recorded (liveness records beats
            # at its ticks, every interval / 4 but at most 2 s).
            await asyncio.sleep(min(interval / 4, 2.0) + 0.5)
            last = await client.zscore(keys.heartbeats, victim)
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
                result["detect_after_last_beat_s"] = found - last
                print(f"detection: offline {found - last:.2f}s after its last beat "
                      f"({found - stopped:.2f}s after it stopped); configured {missed} x "
                      f"{interval:g}s = {missed * interval:g}s")
            offline = [e.node_id for e in (events.decode(f[EVENT_FIELD], i.decode())
                                           for i, f in await client.xrange(keys.events))
                       if e.type == events.NODE_STATUS_CHANGED and e.data["status"] == "offline"]
            print(f"offline transitions: {len(offline)} (expected 1, for {victim}: "
                  f"{offline == [victim]})")
            result["offline_transitions"] = len(offline)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
            ctl.stop()
            server.stop()
    return result


def compare(args: argparse.Namespace) -> None:
    """Run this script once per design and rep, alternating; print medians and ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        before = _trees.materialize(args.baseline, Path(tmp) / "before")
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "ours": []}
        for rep in range(args.reps):
            for kind, tree in (("before", before), ("ours", None)):
                print(f"--- {kind}, rep {rep + 1} of {args.reps}", flush=True)
                done = subprocess.run(
                    [sys.executable, __file__, "--single", "--agents", str(args.agents),
                     "--interval", str(args.interval), "--missed", str(args.missed),
                     "--window", str(args.window)], env={**os.environ, **_trees.env(tree)},
                    capture_output=True, text=True, timeout=DEADLINE + 60, check=True)
                print(done.stdout.rsplit("RESULT ", 1)[0], end="", flush=True)
                runs[kind].append(json.loads(done.stdout.rsplit("RESULT ", 1)[1]))
    print(f"\n{args.agents} agents every {args.interval:g}s, medians of {args.reps}:")
    print(f"{'':38}{'ours':>10}{'before':>10}{'ratio':>8}")
    for title, key in (("controller CPU % with agents", "cpu_pct"),
                       ("controller CPU % with no agents", "idle_cpu_pct"),
                       ("Redis commands per heartbeat", "commands_per_beat"),
                       ("heartbeats per second", "beats_per_s"),
                       ("offline after last beat, s", "detect_after_last_beat_s"),
                       ("offline transitions", "offline_transitions")):
        ours = _median(runs["ours"], key)
        base = _median(runs["before"], key)
        ratio = f"{ours / base:.2f}x" if ours and base else "-"
        print(f"{title:38}{_fmt(ours):>10}{_fmt(base):>10}{ratio:>8}")


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--missed", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--baseline", default=_trees.BEFORE_CONFINEMENT,
                        help="revision of the previous design")
    parser.add_argument("--single", action="store_true",
                        help="one run of the design importable here (used by the comparison)")
    args = parser.parse_args()
    if not args.single:
        compare(args)
        return
    result = asyncio.run(asyncio.wait_for(
        run(args.agents, args.interval, args.missed, args.window), DEADLINE))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
