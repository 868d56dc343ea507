"""Publisher for the fan-out benchmark: XADD events at a fixed rate, each stamped ``sent_ns``.

``--format envelope`` writes what the product writes: field ``e`` of ``pic:events``, the
msgpack envelope from ``common.events.encode`` (a ``gpio.state.changed`` whose ``data`` also
carries ``sent_ns``; extra data fields pass validation and reach clients). ``--format ref``
writes what the Node reference reads: field ``d``, msgpack ``{type, node_id, pin, state,
sent_ns}``. ``sent_ns = time.time_ns()`` is taken just before each XADD. Prints one JSON
summary line. Bounded by ``--count``.
"""

from __future__ import annotations

import argparse
import json
import time

import msgspec
import redis

from common import events

RESOURCES = 256
"""Distinct GPIO resources the events cycle through (state-like keys a slow client keeps)."""


def envelope(i: int) -> bytes:
    event = events.gpio_state_changed(f"led-{i % RESOURCES}", f"pi-{i % 64:02d}", 18,
                                      "high" if i % 2 else "low")
    event.data["sent_ns"] = time.time_ns()
    return events.encode(event)


def reference(i: int) -> bytes:
    return msgspec.msgpack.encode({"type": "gpio.state.changed", "node_id": f"pi-{i % 64:02d}",
                          "pin": 18, "state": "high" if i % 2 else "low",
                          "sent_ns": time.time_ns()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--field", required=True)
    parser.add_argument("--format", choices=("envelope", "ref"), required=True)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--burst", action="store_true",
                        help="ignore --rate: pipelined XADDs, as fast as Redis takes them")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    build = envelope if args.format == "envelope" else reference
    field = args.field.encode()
    if args.burst:
        start = time.perf_counter()
        for first in range(0, args.count, 500):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(first + 500, args.count)):
                pipe.xadd(args.stream, {field: build(i)}, maxlen=100_000, approximate=True)
            pipe.execute()
        elapsed = time.perf_counter() - start
        print(json.dumps({"sent": args.count, "seconds": elapsed, "rate": args.count / elapsed}))
        return
    interval = 1.0 / args.rate
    start = time.perf_counter()
    max_lag = 0.0
    wall_start = time.time()
    for i in range(args.count):
        due = start + i * interval
        lag = time.perf_counter() - due
        if lag < 0:
            time.sleep(-lag)
        else:
            max_lag = max(max_lag, lag)
        client.xadd(args.stream, {field: build(i)}, maxlen=100_000, approximate=True)
    elapsed = time.perf_counter() - start
    print(json.dumps({"sent": args.count, "seconds": elapsed, "rate": args.count / elapsed,
                      "max_lag_ms": max_lag * 1000, "wall_start": wall_start}), flush=True)
    client.close()


if __name__ == "__main__":
    main()
