"""``GET /api/v1/events`` on a long stream: how long a filtered history read takes.

Two controllers run side by side, this checkout ("ours") and the revision before paged
history (_trees.BEFORE_HISTORY_PAGES, "before"), each on its own redis-server filled with
the same EVENTS events: health reports and pin changes, with one ``node.discovered`` (the
oldest entry, as on a fleet running for a while). Each query runs REPS times per server,
alternating; medians are printed with the ours/before ratio.

    .venv/bin/python bench/bench_history.py              # 100,000 events, 20 reps
    .venv/bin/python bench/bench_history.py --events 20000 --reps 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _procs
import _trees
import aiohttp
import redis

_trees.use_tree()

from common import events  # noqa: E402
from common.keys import EVENT_FIELD  # noqa: E402

TOKEN = "pic_bench_admin_token_for_benchmarks_only"
QUERIES = {
    "rare type, limit=1": {"types": "node.discovered", "limit": "1"},
    "common type, limit=100": {"types": "gpio.state.changed", "limit": "100"},
    "no filter, limit=100": {"limit": "100"},
    "one node, limit=50": {"node": "pi-7", "limit": "50"},
}


def fill(url: str, count: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    pipe.xadd("pic:events", {EVENT_FIELD: events.encode(
        events.node_discovered("pi-0", "192.168.1.10", "pi-0"))})
    for n in range(count - 1):
        node = f"pi-{n % 40}"
        event = (events.gpio_state_changed(f"led-{n % 40}", node, 18, "high" if n % 2 else "low")
                 if n % 3 else events.node_health_reported(node, {"cpu_temp": 48.5,
                                                                  "load": 0.3}))
        pipe.xadd("pic:events", {EVENT_FIELD: events.encode(event)})
        if n % 5000 == 0:
            pipe.execute()
    pipe.execute()
    client.close()


async def timed(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.get(f"{url}/api/v1/events", params=params) as reply:
        body = await reply.json()
        assert reply.status == 200, body
    return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pic-history-"))
    before_tree = _trees.materialize(args.baseline, workdir / "before-tree")
    servers = {}
    try:
        for kind, tree in (("ours", None), ("before", before_tree)):
            store = _procs.RedisServer(f"redis-{kind}", workdir / f"redis-{kind}", 1).start()
            fill(store.url, args.events)
            port = _procs.free_port()
            proc = _procs.Proc(kind, [sys.executable, "-m", "controller", "serve",
                                      "--redis-url", store.url, "--port", str(port)],
                               workdir / f"{kind}.log", core=0,
                               env={"PIC_ADMIN_TOKEN": TOKEN, **_trees.env(tree)},
                               cwd=tree).start()
            _procs.wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60)
            servers[kind] = (proc, store, f"http://127.0.0.1:{port}")
        results: dict[str, dict[str, list[float]]] = {q: {"ours": [], "before": []}
                                                      for q in QUERIES}
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            for rep in range(args.reps):
                for name, params in QUERIES.items():
                    order = ("ours", "before") if rep % 2 else ("before", "ours")
                    for kind in order:
                        results[name][kind].append(await timed(session, servers[kind][2],
                                                               params))
        print(f"GET /api/v1/events on {args.events:,} events, median of {args.reps} "
              f"(before = {args.baseline}):")
        print(f"  {'query':28}{'ours ms':>10}{'before ms':>12}{'ours/before':>14}")
        for name, by in results.items():
            ours, before = statistics.median(by["ours"]), statistics.median(by["before"])
            print(f"  {name:28}{ours * 1000:10.1f}{before * 1000:12.1f}{ours / before:13.2f}x")
    finally:
        for proc, store, _ in servers.values():
            proc.stop()
            store.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--baseline", default=_trees.BEFORE_HISTORY_PAGES)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
