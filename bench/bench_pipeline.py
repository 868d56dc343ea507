"""The event spine end to end: agent write path -> Redis -> controller -> N /ws clients.

Events are written exactly as an agent writes a confirmed pin change (``agent.outbox``: the
resource's status and the event in one MULTI/EXEC, batched while a backlog exists), read by
the server under test, and fanned out to N clients (the reference's low-overhead load
client). Reported for our controller and, in the same run, the naive baseline
(``naive_server.py``: JSON-encodes per client, awaits each send):

  throughput   20,000 events offered as fast as the agent path writes them, 10 clients:
               events/s delivered to each client
  latency      1,000 events/s for --seconds to 50 clients: p50/p99 publish-to-receive

Server on core 0, everything else on core 1 (see bench_fanout.py).

    .venv/bin/python bench/bench_pipeline.py --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import _procs
import _reference
import bench_fanout as fanout
from _load import Feed

HERE = Path(__file__).resolve().parent


async def measure(kind: str, ref: _reference.Reference, workdir: Path, seconds: float,
                  reps: int) -> dict[str, Any]:
    target = fanout.start_target(kind, workdir, ref, redis_core=fanout.LOAD_CORE)
    target.feed = Feed(target.feed.redis_url, "pic:events", "e", "agent")
    out: dict[str, Any] = {"throughput": [], "latency": []}
    try:
        for _ in range(reps):
            await fanout.settle([target])
            burst = await fanout.run_traffic(target, ref, clients=10, rate=20_000,
                                             seconds=1.0)
            window = burst["drain_s"] + burst["publisher"]["seconds"]
            out["throughput"].append({
                "delivered_pct": burst["delivered_pct"],
                "events_per_s_per_client": burst["delivered"] / 10 / window,
                "agent_path_write_rate": burst["publisher"]["rate"],
                "cpu_us_per_msg": burst["cpu_us_per_msg"]})
            await fanout.settle([target])
            steady = await fanout.run_traffic(target, ref, clients=50, rate=1000.0,
                                              seconds=seconds)
            out["latency"].append({k: steady[k] for k in (
                "delivered_pct", "p50_ms", "p99_ms", "cpu_us_per_msg")})
    finally:
        target.proc.stop()
        target.redis.stop()
    return out


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


async def main_async(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {fanout.LOAD_CORE})
    _procs.raise_priority(args.nice)
    ref = _reference.prepare(args.reference_dir, args.reference_cache)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = args.results / f"pipeline-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    results = {kind: await measure(kind, ref, workdir, args.seconds, args.reps)
               for kind in ("ours", "naive")}
    (args.results / f"pipeline-{stamp}.json").write_text(json.dumps(results, indent=1))
    print(f"\nevent spine, medians of {args.reps} (server on core 0, load on core 1)")
    print(f"{'':34}{'ours':>12}{'naive':>12}{'ratio':>9}")
    rows = [("throughput: events/s per client", "throughput", "events_per_s_per_client"),
            ("throughput: delivered %", "throughput", "delivered_pct"),
            ("throughput: CPU us per message", "throughput", "cpu_us_per_msg"),
            ("1,000/s x 50: p50 ms", "latency", "p50_ms"),
            ("1,000/s x 50: p99 ms", "latency", "p99_ms"),
            ("1,000/s x 50: delivered %", "latency", "delivered_pct")]
    for title, part, key in rows:
        ours, naive = median(results["ours"][part], key), median(results["naive"][part], key)
        ratio = f"{ours / naive:.2f}x" if ours and naive else "-"
        print(f"{title:34}{_fmt(ours):>12}{_fmt(naive):>12}{ratio:>9}")
    print(f"(agent write path sustained {_fmt(median(results['ours']['throughput'], 'agent_path_write_rate'))} events/s into Redis)")  # noqa: E501


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--nice", type=int, default=-10)
    parser.add_argument("--reference-dir", type=Path, default=_reference.DEFAULT_DIR)
    parser.add_argument("--reference-cache", type=Path, default=_reference.DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
