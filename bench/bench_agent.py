"""The node agent's footprint at steady state: RSS, idle CPU and bytes written to disk.

Targets (a Pi Zero 2 W has 512 MB and an SD card): RSS under 40 MB, idle CPU under 1 % of a
core, nothing written to disk. The baseline is a bare Python interpreter that only sleeps,
measured the same way in the same run.

    .venv/bin/python bench/bench_agent.py --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._procs import Proc, RedisServer, cpu_seconds, free_port, rss_bytes
from common import redis_client
from common.keys import Keys
from controller.gpio_service import GpioService
from controller.store import Store


def disk_writes(pid: int) -> int:
    """Bytes this process caused to be written to storage (not pipes or sockets)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["write_bytes"])


async def declare_pins(url: str, node_id: str) -> None:
    redis = redis_client.connect(url)
    store = Store(redis, Keys(), stream_maxlen=10_000)
    try:
        async with asyncio.timeout(20):
            while node_id not in await store.nodes.ids():
                await asyncio.sleep(0.05)
        service = GpioService(store)
        for name, spec in (("relay", {"pin": 17, "mode": "output", "state": "high"}),
                           ("button", {"pin": 27, "mode": "input", "pull": "up"}),
                           ("fan", {"pin": 18, "mode": "pwm", "pwmDuty": 40})):
            await service.create({"apiVersion": "hardware.pi-controller.io/v1",
                                  "kind": "GPIOPin", "metadata": {"name": name},
                                  "spec": {"nodeName": node_id, **spec}}, "bench", name)
    finally:
        await redis.aclose()


def sample(pid: int, seconds: float, interval: float = 1.0) -> dict[str, float]:
    rss: list[int] = []
    cpu0, disk0, t0 = cpu_seconds(pid), disk_writes(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss.append(rss_bytes(pid))
        time.sleep(interval)
    wall = time.monotonic() - t0
    return {
        "rss_mb_median": statistics.median(rss) / 2**20,
        "rss_mb_max": max(rss) / 2**20,
        "cpu_pct_of_core": 100 * (cpu_seconds(pid) - cpu0) / wall,
        "disk_bytes_written": disk_writes(pid) - disk0,
        "seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pic-bench-agent-") as tmp:
        work = Path(tmp)
        redis = RedisServer("redis", work / "redis", core=None).start()
        # The agent runs as in the field: its own Redis user, a controller ingesting.
        subprocess.run([sys.executable, "-m", "controller", "agent-credentials", "--redis-url",
                        redis.url, "bench-pi", "--out-dir", str(work / "creds")], check=True,
                       capture_output=True, timeout=60)
        controller = Proc("controller", [sys.executable, "-m", "controller", "serve",
                                         "--redis-url", redis.url, "--port",
                                         str(free_port())], work / "controller.log",
                          core=None).start()
        agent = Proc("agent", [sys.executable, "-m", "agent", "--redis-url-file",
                               str(work / "creds" / "bench-pi.url"), "--node-id", "bench-pi",
                               "--gpio", "sim"], work / "agent.log", core=None).start()
        baseline = Proc("bare python", [sys.executable, "-c",
                                        "import time\nwhile True: time.sleep(5)"],
                        work / "bare.log", core=None).start()
        try:
            asyncio.run(declare_pins(redis.url, "bench-pi"))
            time.sleep(args.warmup)
            results = {"agent": sample(agent.pid, args.seconds),
                       "bare_python": sample(baseline.pid, min(args.seconds, 10.0))}
        finally:
            for proc in (agent, baseline, controller, redis):
                proc.stop()
    agent_r, bare = results["agent"], results["bare_python"]
    print(json.dumps(results, indent=2))
    print(f"\nagent steady state over {agent_r['seconds']:.0f} s "
          "(default heartbeat 5 s, health 30 s, 3 pins declared):")
    print(f"  RSS        {agent_r['rss_mb_median']:6.1f} MB median, {agent_r['rss_mb_max']:.1f} "
          f"max   (target < 40 MB; bare interpreter {bare['rss_mb_median']:.1f} MB)")
    print(f"  CPU        {agent_r['cpu_pct_of_core']:6.2f} % of a core          (target < 1 %)")
    print(f"  disk       {agent_r['disk_bytes_written']:6d} bytes written          "
          "(target 0)")


if __name__ == "__main__":
    main()
