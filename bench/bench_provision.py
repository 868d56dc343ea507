"""Time to provision three fake Pis (1 server + 2 agents): in parallel versus one by one.

Three OpenSSH servers in network namespaces dressed up as Pis (tests/support/fakepi.py),
a real redis-server, the controller in this process. The same cluster is provisioned

1. parallel: one POST /api/v1/clusters with the server and both agents;
2. one after another: the server alone, then each agent added once the previous job
   finished (what provisioning by hand, node by node, amounts to).

Each timed from the request to the last job's success, on fresh nodes every round. The
stand-in K3s installer is instant unless --install-seconds makes it sleep (a real K3s
install on a Pi 4 takes tens of seconds, mostly the download).

Usage (root; traffic stays in namespaces this script creates):
  unshare --net sh -c 'ip link set lo up && .venv/bin/python bench/bench_provision.py'
  ... bench/bench_provision.py --rounds 3 --install-seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.keys import Keys
from controller import appkeys
from tests.support import fakepi
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAKE_AGENT = ("mkdir -p /opt/pi-agent/bin && printf '#!/bin/sh\\nexit 0\\n' > "
              "/opt/pi-agent/bin/pi-agent && chmod 755 /opt/pi-agent/bin/pi-agent")
DEADLINE = 120.0
"""Seconds one provisioning may take before the run is abandoned."""


async def finished(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        async with http.get(f"{url}/api/v1/jobs/{job_id}") as r:
            job: dict[str, Any] = await r.json()
        return job if job["status"] in ("succeeded", "failed", "interrupted") else None
    job = await wait_until(done, DEADLINE, interval=0.02, what=f"job {job_id}")
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
    return job


async def bounded_cleanup(runner: web.AppRunner) -> None:
    try:
        await asyncio.wait_for(runner.cleanup(), 30)
    except TimeoutError:
        for task in asyncio.all_tasks():
            print(f"still running: {task.get_name()}", file=sys.stderr)
            task.print_stack(limit=8, file=sys.stderr)
        raise SystemExit("the controller did not shut down within 30 s") from None


async def round_trip(mode: str, root: Path, redis_url: str, install_seconds: float
                     ) -> float:
    from controller.app import create_app
    from controller.settings import ControllerSettings

    fleet = fakepi.Fleet(root / f"fleet-{mode.replace(' ', '-')}",
                         install_seconds=install_seconds).start()
    files = web.AppRunner(web.Application())
    files.app.router.add_static("/", fleet.bundle)
    await files.setup()
    file_port = free_port()
    await web.TCPSite(files, fleet.gateway, file_port).start()
    port = free_port()
    app = create_app(ControllerSettings(
        redis_url=redis_url, port=port, admin_token=ADMIN_TOKEN, state_dir=str(root / "state"),
        provision_arch=["x86_64"], lease_ttl=1.0,
        k3s_install_url=f"http://{fleet.gateway}:{file_port}/install.sh",
        agent_install_command=FAKE_AGENT, ssh_connect_timeout=5.0))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[appkeys.BOOTSTRAPPED].wait(), 20)  # admin token in place
    url = f"http://127.0.0.1:{port}"
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(f"{url}/api/v1/ssh/public-key") as r:
                body = await r.json()
                if r.status != 200:
                    raise SystemExit(f"public key: {r.status} {body}")
                public = body["public_key"]
            names = ["pi-server", "pi-agent-1", "pi-agent-2"]
            for name in names:
                pi = fleet.add(name, public)
                await client.hset(keys.node(name), mapping={"status": "discovered",
                                                            "ip_address": pi.ip})
                await client.sadd(keys.nodes, name)
            started = time.perf_counter()
            if mode == "parallel":
                async with http.post(f"{url}/api/v1/clusters", json={
                        "name": "bench", "servers": names[:1], "agents": names[1:]}) as r:
                    created = await r.json()
                for job in created["jobs"]:
                    await finished(http, url, job["id"])
            else:
                async with http.post(f"{url}/api/v1/clusters", json={
                        "name": "bench", "servers": names[:1]}) as r:
                    created = await r.json()
                await finished(http, url, created["jobs"][0]["id"])
                cluster_id = created["cluster"]["id"]
                for name in names[1:]:
                    async with http.post(f"{url}/api/v1/clusters/{cluster_id}/nodes",
                                         json={"node_id": name, "role": "agent"}) as r:
                        job = await r.json()
                    await finished(http, url, job["id"])
            return time.perf_counter() - started
    finally:
        await bounded_cleanup(runner)
        await files.cleanup()
        fleet.stop()
        await client.flushall()
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--install-seconds", type=float, default=0.0,
                        help="how long the stand-in K3s installer takes (default 0)")
    args = parser.parse_args()
    reason = fakepi.namespaces_usable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = RedisServer(root / "redis")
        server.start()
        try:
            results: dict[str, list[float]] = {"parallel": [], "one after another": []}
            for _ in range(max(1, min(args.rounds, 10))):
                for mode, times in results.items():
                    times.append(await round_trip(mode, root, server.url,
                                                  args.install_seconds))
        finally:
            server.stop()
    print(f"provisioning 1 server + 2 agents (fake Pis over real sshd), stand-in install "
          f"{args.install_seconds:.1f}s, {len(results['parallel'])} round(s), median (min-max):")
    for mode, times in results.items():
        print(f"  {mode:18s} {statistics.median(times):6.2f} s  "
              f"({min(times):.2f}-{max(times):.2f})")
    speedup = statistics.median(results["one after another"]) / statistics.median(
        results["parallel"])
    print(f"  parallel is {speedup:.2f}x faster")


if __name__ == "__main__":
    asyncio.run(main())
