"""The event spine end to end: agent write path -> Redis -> controller -> N /ws clients.

Reports are written exactly as an agent writes them (``agent.outbox``, batched while a
backlog exists: health reports carrying ``sent_ns``), turned into events by the controller
under test, and fanned out to N clients (the reference's low-overhead load client).
Reported for this checkout ("ours": the agent writes its own ingress stream under its own
Redis user, the controller ingests, checks and writes the event) and, in the same run, the
previous design ("before", revision --baseline: the agent wrote the event and state itself
with the controller's credentials), extracted with ``git archive``:

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
import _trees
import bench_fanout as fanout
from _load import Feed

HERE = Path(__file__).resolve().parent


async def measure(kind: str, ref: _reference.Reference, workdir: Path, seconds: float,
                  reps: int, tree: Path | None) -> dict[str, Any]:
    # The bench floods one agent far past the per-agent rate limit meant for real Pis.
    extra = [] if tree is not None else ["--agent-max-rate", "1000000"]
    target = fanout.start_target("ours", workdir / kind, ref, redis_core=fanout.LOAD_CORE,
                                 tree=tree, extra=extra)
    target.feed = Feed(target.feed.redis_url, "pic:events", "e", "agent", _trees.env(tree))
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
    before = _trees.materialize(args.baseline, workdir / "before-tree")
    results: dict[str, dict[str, Any]] = {"ours": {"throughput": [], "latency": []},
                                          "before": {"throughput": [], "latency": []}}
    for _ in range(args.reps):  # interleaved, so drift in the machine's load hits both
        for kind, tree in (("before", before), ("ours", None)):
            one = await measure(kind, ref, workdir, args.seconds, 1, tree)
            for part in ("throughput", "latency"):
                results[kind][part] += one[part]
    (args.results / f"pipeline-{stamp}.json").write_text(json.dumps(results, indent=1))
    print(f"\nevent spine, medians of {args.reps} (server on core 0, load on core 1)")
    print(f"{'':34}{'ours':>12}{'before':>12}{'ratio':>9}")
    rows = [("throughput: events/s per client", "throughput", "events_per_s_per_client"),
            ("throughput: delivered %", "throughput", "delivered_pct"),
            ("throughput: CPU us per message", "throughput", "cpu_us_per_msg"),
            ("1,000/s x 50: p50 ms", "latency", "p50_ms"),
            ("1,000/s x 50: p99 ms", "latency", "p99_ms"),
            ("1,000/s x 50: delivered %", "latency", "delivered_pct")]
    for title, part, key in rows:
        ours, base = median(results["ours"][part], key), median(results["before"][part], key)
        ratio = f"{ours / base:.2f}x" if ours and base else "-"
        print(f"{title:34}{_fmt(ours):>12}{_fmt(base):>12}{ratio:>9}")
    for kind in ("ours", "before"):
        rate = median(results[kind]["throughput"], "agent_path_write_rate")
        print(f"({kind}: the agent write path sustained {_fmt(rate)} reports/s into Redis)")


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
    parser.add_argument("--baseline", default=_trees.BEFORE_CONFINEMENT,
                        help="revision of the previous design (default: before agents were "
                        "confined tenants)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
