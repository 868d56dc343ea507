"""GPIO latency and throughput through real processes.

A redis-server, the controller and one agent (pigpio backend, its real ``pigpio`` client
talking to the pigpiod-protocol server from tests/support) are started; then:

1. latency: 1,000 REST changes one after another (PATCH spec.state), each timed from the
   request to its ``gpio.state.changed`` confirmation on /ws (matched by request id);
   baselines from the same run: the PATCH response alone, and one pigpio WRITE round trip;
2. commands/s one agent sustains: N commands appended to its command stream at once,
   timed until the agent has applied and acknowledged them all;
3. commands/s end to end: N REST changes, 32 in flight, until the last confirmation.

Usage: .venv/bin/python bench/bench_gpio.py [--changes 1000] [--burst 5000]
Everything runs on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pigpio
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import gpio
from common.keys import AGENT_GROUP, COMMAND_FIELD, Keys
from tests.support import processes
from tests.support.pigpiod import FakePigpiod
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

NODE = "pi-bench"
AUTH = {"Authorization": f"Bearer {processes.ADMIN_TOKEN}"}
DEADLINE = 300.0
"""Seconds the whole run may take."""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


class Confirmations:
    """Reads /ws and notes when each request id's gpio.state.changed arrived."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: dict[str, float] = {}
        self.count = 0
        self._waiters: dict[str, asyncio.Future[float]] = {}

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            event = json.loads(msg.data)
            if event.get("type") != "gpio.state.changed":
                continue
            self.count += 1
            request_id = event["data"].get("request_id")
            if request_id:
                self.seen[request_id] = now
                waiter = self._waiters.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)

    async def wait(self, request_id: str, timeout: float = 10.0) -> float:
        if request_id in self.seen:
            return self.seen[request_id]
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        async with asyncio.timeout(timeout):
            return await future


def write_round_trip(port: int, count: int = 500) -> list[float]:
    pi = pigpio.pi("127.0.0.1", port, False)
    try:
        timings = []
        for i in range(count):
            start = time.perf_counter()
            pi.write(26, i & 1)
            timings.append(time.perf_counter() - start)
        return timings
    finally:
        pi.stop()


async def run(changes: int, burst: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpio-"))
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    daemon = await FakePigpiod().start()
    ctl = processes.controller(redis_server.url, tmp / "controller.log").start()
    agent = processes.agent(redis_server.url, NODE, tmp / "agent.log", extra=[
        "--gpio", "pigpio", "--pigpio-port", str(daemon.port), "--log-level", "warning"])
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
        agent.start()
        api = f"{ctl.url}/api/v1"  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async def node_ready() -> bool:
                async with http.get(f"{api}/nodes/{NODE}") as response:
                    return response.status == 200 and (await response.json()).get(
                        "status") == "ready"

            await wait_until(node_ready, 30, what="agent ready")
            ws = await http.ws_connect(
                f"{ctl.url.replace('http', 'ws')}/ws?types=gpio.state.changed")  # type: ignore[attr-defined]
            confirmations = Confirmations(ws)
            reader = asyncio.create_task(confirmations.run(), name="ws reader")
            try:
                await measure(http, api, redis, daemon, confirmations, changes, burst)
            finally:
                await ws.close()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await redis.aclose()
        # In threads: the fake pigpiod lives on this loop and must answer while they stop.
        await asyncio.to_thread(agent.stop)
        await asyncio.to_thread(ctl.stop)
        await daemon.stop()
        redis_server.stop()


async def create(http: aiohttp.ClientSession, api: str, name: str, pin: int) -> None:
    body = {"apiVersion": gpio.API_VERSION, "kind": gpio.KIND, "metadata": {"name": name},
            "spec": {"nodeName": NODE, "pin": pin, "mode": "output", "state": "low"}}
    async with http.post(f"{api}/gpio", json=body) as response:
        assert response.status == 201, await response.text()


async def measure(http: aiohttp.ClientSession, api: str, redis: aioredis.Redis,
                  daemon: FakePigpiod, confirmations: Confirmations, changes: int,
                  burst: int) -> None:
    await create(http, api, "bench-led", 17)
    await wait_until(lambda: daemon.mode(17) == 1, 10, what="bench-led configured")

    # 1. latency, one change at a time.
    latencies, responses = [], []
    for i in range(changes):
        request_id = f"lat-{i}"
        start = time.perf_counter()
        async with http.patch(f"{api}/gpio/bench-led", headers={"X-Request-ID": request_id},
                              json={"spec": {"state": "high" if i % 2 == 0 else "low"}}
                              ) as response:
            assert response.status == 200, await response.text()
        responses.append(time.perf_counter() - start)
        latencies.append(await confirmations.wait(request_id) - start)
    write_rtt = await asyncio.to_thread(write_round_trip, daemon.port)
    assert daemon.level(17) == (1 if changes % 2 else 0)

    print(f"GPIO change latency, REST PATCH -> gpio.state.changed on /ws ({changes} changes, "
          "sequential):")
    print(f"  p50 {ms(statistics.median(latencies))}   p99 {ms(pct(latencies, 0.99))}   "
          f"max {ms(max(latencies))}")
    print(f"  baseline, PATCH response alone:  p50 {ms(statistics.median(responses))}   "
          f"p99 {ms(pct(responses, 0.99))}")
    print(f"  baseline, one pigpio WRITE round trip (client thread -> pigpiod): "
          f"p50 {ms(statistics.median(write_rtt))}   p99 {ms(pct(write_rtt, 0.99))}")

    # 2. what one agent sustains: a burst straight onto its command stream.
    keys = Keys()
    stored = gpio.decode_pin(await redis.hget(keys.gpio("bench-led"), "resource"))
    base = stored.metadata.generation
    before = confirmations.count
    start = time.perf_counter()
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(burst):
            spec = gpio.GpioSpec(node_name=NODE, pin=17, mode="output",
                                 state="high" if i % 2 == 0 else "low")
            cmd = gpio.GpioCommand(op="apply", resource="bench-led", spec=spec,
                                   generation=base + 1 + i, actor="bench")
            pipe.xadd(keys.commands(NODE), {COMMAND_FIELD: gpio.encode_command(cmd)})
        await pipe.execute()
    queued = time.perf_counter() - start

    async def drained() -> bool:
        info = await redis.xinfo_groups(keys.commands(NODE))
        group = next(g for g in info if g["name"].decode() == AGENT_GROUP)
        return int(group["pending"]) == 0 and int(group.get("lag") or 0) == 0

    await wait_until(drained, 120, interval=0.01, what="the agent to drain its commands")
    elapsed = time.perf_counter() - start
    await wait_until(lambda: confirmations.count - before >= burst, 30,
                     what="every confirmation on /ws")
    print(f"One agent, {burst} commands appended at once (XADD took {ms(queued)}): applied "
          f"and acked in {elapsed:.2f} s = {burst / elapsed:,.0f} commands/s")

    # 3. end to end, 32 REST changes in flight over 16 resources.
    names = [f"bench-{i}" for i in range(16)]
    for i, name in enumerate(names):
        await create(http, api, name, i + 2 if i + 2 != 17 else 27)
    semaphore = asyncio.Semaphore(32)
    total = min(burst, 2000)

    async def change(i: int) -> None:
        async with semaphore, http.patch(
                f"{api}/gpio/{names[i % len(names)]}", headers={"X-Request-ID": f"e2e-{i}"},
                json={"spec": {"state": "high" if (i // len(names)) % 2 == 0 else "low"}}
        ) as response:
            assert response.status == 200, await response.text()

    start = time.perf_counter()
    await asyncio.gather(*(change(i) for i in range(total)))
    # Changes to one resource may be superseded before the agent reads them; the last
    # change of each resource is always confirmed.
    last = [f"e2e-{i}" for i in range(total - len(names), total)]
    for request_id in last:
        await confirmations.wait(request_id, 60)
    elapsed = time.perf_counter() - start
    confirmed = sum(1 for i in range(total) if f"e2e-{i}" in confirmations.seen)
    print(f"End to end, {total} REST changes with 32 in flight over {len(names)} pins: "
          f"{elapsed:.2f} s = {total / elapsed:,.0f} changes/s ({confirmed} confirmed "
          "individually)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=5000)
    args = parser.parse_args()

    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await run(args.changes, args.burst)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
