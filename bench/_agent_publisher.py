"""Publisher that goes through the agent's own write path (``agent.outbox.Outbox``): each
item is a health report whose metrics carry ``sent_ns`` (stamped when it is emitted), the
report a real agent sends every health interval. Prints one JSON summary line, like
``_publisher.py``. Bounded by ``--count``.

It runs against whichever design is importable (``PIC_BENCH_TREE``): agents as confined
tenants (a ``Health`` report on the node's own ingress stream, under its own Redis user,
which the controller turns into state and the event), or the earlier one (the agent writes
``node.health.reported`` and the metrics history itself, in one MULTI/EXEC).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import time
from typing import Any

import _trees

_trees.use_tree()

from agent.outbox import Link, Outbox  # noqa: E402
from common import redis_client  # noqa: E402
from common.keys import Keys  # noqa: E402

NODE = "pi-bench"
CONFINED = "node_id" in inspect.signature(Outbox).parameters
"""The confined design's outbox writes one node's ingress stream, so it is made for a node."""


async def confined_outbox(admin_url: str, keys: Keys, size: int) -> tuple[Any, Outbox]:
    from common import reports
    from controller.store.agents import AgentAccess

    admin = redis_client.connect(admin_url)
    try:
        credentials = await AgentAccess(admin, keys, redis_url=admin_url,
                                        agent_address="").issue(NODE)
    finally:
        await admin.aclose()
    redis = redis_client.connect(credentials.redis_url)
    outbox = Outbox(redis, keys, NODE, Link(), size=size)  # type: ignore[call-arg]
    outbox.emit(reports.Started(facts=reports.NodeFacts(  # type: ignore[arg-type]
        node_id=NODE, hostname=NODE, ip_address="127.0.0.1", model="bench", arch="aarch64",
        os="bench", kernel="bench")))
    return redis, outbox


def health(outbox: Outbox, keys: Keys, metrics: dict[str, Any]) -> None:
    if CONFINED:
        from common import reports

        outbox.emit(reports.Health(metrics=metrics))  # type: ignore[arg-type]
        return
    import msgspec

    from agent.outbox import Write  # type: ignore[attr-defined]
    from common import events

    key = keys.node_metrics(NODE)
    outbox.emit(events.node_health_reported(NODE, metrics), (  # type: ignore[arg-type]
        Write(("LPUSH", key, msgspec.json.encode(metrics))), Write(("LTRIM", key, 0, 119))))


async def run(url: str, rate: float, count: int) -> dict[str, float]:
    keys = Keys()
    if CONFINED:
        redis, outbox = await confined_outbox(url, keys, count + 2)
    else:
        redis = redis_client.connect(url)
        outbox = Outbox(redis, keys, Link(), size=count + 1)  # type: ignore[call-arg,arg-type]
    writer = asyncio.create_task(outbox.run(), name="outbox")
    interval = 1.0 / rate
    start = time.perf_counter()
    wall_start = time.time()
    try:
        for i in range(count):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            health(outbox, keys, {"cpu_percent": float(i % 100), "seq": i,
                                  "sent_ns": time.time_ns()})
        await outbox.drained(60)
        elapsed = time.perf_counter() - start
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await redis.aclose()
    return {"sent": count, "seconds": elapsed, "rate": count / elapsed, "wall_start": wall_start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", default="pic:events")
    parser.add_argument("--field", default="e")
    parser.add_argument("--format", default="agent")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.redis_url, 1e9 if args.burst else args.rate,
                                     args.count))), flush=True)


if __name__ == "__main__":
    main()
