"""Publisher that goes through the agent's own write path (``agent.outbox.Outbox``): each
event is a ``gpio.state.changed`` written in one MULTI/EXEC with its resource's status, as
the agent writes a confirmed pin change. ``sent_ns`` is stamped when the event is emitted.
Prints one JSON summary line, like ``_publisher.py``. Bounded by ``--count``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.outbox import Link, Outbox, Write
from common import events, redis_client
from common.keys import Keys


async def run(url: str, rate: float, count: int) -> dict[str, float]:
    redis = redis_client.connect(url)
    keys = Keys()
    outbox = Outbox(redis, keys, Link(), size=count + 1)
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
            resource = f"led-{i % 256}"
            event = events.gpio_state_changed(resource, f"pi-{i % 64:02d}", 18,
                                              "high" if i % 2 else "low")
            event.data["sent_ns"] = time.time_ns()
            outbox.emit(event, (Write(("HSET", keys.gpio(resource), "status", b"{}")),))
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
