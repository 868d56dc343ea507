"""Losing the Redis primary behind Sentinel: how long until the fleet's events flow again.

Each rep starts a fresh set (primary, replica, three Sentinels, down-after 1 s), a
controller and one agent (health every 0.2 s) on loopback, follows /ws, kills the primary
(SIGKILL) and measures from the kill to:

  promoted   every Sentinel names the new primary
  events     the first agent event on /ws that the promoted replica carried
  gpio       a GPIO change made then is confirmed by the agent (gpio.state.changed)

    .venv/bin/python bench/bench_failover.py --reps 5

Sentinel's down-after-milliseconds (1 s here; 30 s by default) is most of "promoted": the
figure to compare across changes is events - promoted, the part that is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support import processes  # noqa: E402
from tests.support.processes import ADMIN_TOKEN  # noqa: E402
from tests.support.sentinel import SentinelSet  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "bench-secret"
NODE = "pi-bench-1"


async def until(check: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no {what} within {timeout} s")


async def one_rep(workdir: Path) -> dict[str, float]:
    with SentinelSet(workdir / "redis", password=PASSWORD) as cluster:
        url = cluster.sentinel_url(password=PASSWORD)
        controller = processes.controller(url, workdir / "controller.log").start()
        agent = processes.agent(url, NODE, workdir / "agent.log",
                                extra=["--health-interval", "0.2"])
        try:
            await processes.wait_ready(controller.url, controller)  # type: ignore[attr-defined]
            agent.start()
            api = f"{controller.url}/api/v1"  # type: ignore[attr-defined]
            seen: list[tuple[float, dict[str, Any]]] = []
            async with aiohttp.ClientSession(headers=AUTH) as http:
                ws = await http.ws_connect(
                    f"{controller.url.replace('http', 'ws')}/ws")  # type: ignore[attr-defined]

                async def read() -> None:
                    async for msg in ws:
                        seen.append((time.monotonic(), msg.json()))
                reader = asyncio.create_task(read())
                try:
                    await until(lambda: any(m["type"] == "node.health.reported"
                                            for _, m in seen), 30, "health events")
                    async with http.post(f"{api}/gpio", json={
                            "apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
                            "metadata": {"name": "relay"}, "spec": {
                                "nodeName": NODE, "pin": 17, "mode": "output",
                                "state": "low"}}) as reply:
                        assert reply.status == 201, await reply.text()
                    old_port = cluster.current_primary_port()
                    killed = time.monotonic()
                    cluster.kill_primary()
                    new_port = await asyncio.to_thread(cluster.wait_for_new_primary, old_port)
                    promoted = time.monotonic()
                    # An event the promoted replica carried: appended after promotion.
                    events_at = await until(lambda: any(
                        t > promoted and m["type"] == "node.health.reported"
                        for t, m in seen), 60, "events after the failover")

                    async def patched() -> bool:
                        async with http.patch(f"{api}/gpio/relay",
                                              json={"spec": {"state": "high"}}) as reply:
                            return reply.status == 200
                    await until(patched, 30, "a GPIO change accepted")
                    gpio_at = await until(lambda: any(
                        m["type"] == "gpio.state.changed" and m["data"]["state"] == "high"
                        for _, m in seen), 30, "the change confirmed")
                    assert new_port != old_port
                finally:
                    reader.cancel()
                    await ws.close()
        finally:
            await asyncio.to_thread(agent.stop)
            await asyncio.to_thread(controller.stop)
    return {"promoted_s": promoted - killed, "events_s": events_at - killed,
            "gpio_s": gpio_at - killed, "ours_s": events_at - promoted}


async def main_async(args: argparse.Namespace) -> int:
    runs = []
    for rep in range(1, args.reps + 1):
        with tempfile.TemporaryDirectory(prefix="pic-failover-") as tmp:
            run = await one_rep(Path(tmp))
        runs.append(run)
        print(f"rep {rep}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()), flush=True)
    print(f"\nmedian of {len(runs)} (seconds from the primary's kill):")
    for key, label in (("promoted_s", "Sentinel promoted a replica"),
                       ("events_s", "agent events flowing on /ws"),
                       ("gpio_s", "a GPIO change confirmed"),
                       ("ours_s", "events after promotion (ours)")):
        values = [r[key] for r in runs]
        print(f"  {label:32} {statistics.median(values):6.2f}   "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
