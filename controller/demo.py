"""``pi-controller demo``: Redis, the controller and simulated agents on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from common import redis_client
from common.errors import PiControllerError
from common.keys import Keys
from controller.credentials_cli import write_url_files
from controller.embedded_redis import embedded_redis
from controller.gpio_service import GpioService
from controller.server import serve
from controller.settings import ControllerSettings
from controller.store import Store

logger = logging.getLogger(__name__)

DEMO_PINS = (
    ("led", {"pin": 17, "mode": "output", "state": "low", "safeState": "low"}),
    ("button", {"pin": 27, "mode": "input", "pull": "up", "debounceMs": 20}),
    ("fan", {"pin": 18, "mode": "pwm", "pwmDuty": 30, "pwmFrequency": 25000}),
)


def agent_command(url_file: Path, node_id: str, prefix: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--redis-url-file", str(url_file),
            "--redis-prefix", prefix,
            "--node-id", node_id, "--hostname", node_id, "--address", "127.0.0.1",
            "--gpio", "sim", "--sim-input-interval", "4", "--heartbeat-interval", "2",
            "--health-interval", "10"]


async def seed_pins(settings: ControllerSettings, node_ids: list[str]) -> None:
    redis = redis_client.connect(settings.redis_url)
    store = Store(redis, Keys(settings.redis_prefix), stream_maxlen=settings.stream_maxlen)
    service = GpioService(store)
    try:
        async with asyncio.timeout(30):
            while len(set(await store.nodes.ids()) & set(node_ids)) < len(node_ids):
                await asyncio.sleep(0.1)
        existing = set(await store.gpio.names())
        for index, node_id in enumerate(node_ids, start=1):
            for kind, spec in DEMO_PINS:
                name = f"{kind}-{index}"
                if name in existing:
                    continue
                with contextlib.suppress(PiControllerError):
                    await service.create({"apiVersion": "hardware.pi-controller.io/v1",
                                          "kind": "GPIOPin", "metadata": {"name": name},
                                          "spec": {"nodeName": node_id, **spec}},
                                         "demo", "demo-seed")
    finally:
        await redis.aclose()


def cli_path() -> str:
    """How to run ``pi-controller`` from here: its name when it is on the PATH, else the
    path the install put it at (``.venv/bin/pi-controller`` after ./scripts/demo)."""
    if shutil.which("pi-controller"):
        return "pi-controller"
    installed = Path(sys.executable).parent / "pi-controller"
    try:
        return str(installed.relative_to(Path.cwd()))
    except ValueError:
        return str(installed)


async def run_demo(settings: ControllerSettings, nodes: int, state_dir: Path) -> None:
    token = settings.admin_token or "pic_" + secrets.token_urlsafe(24)
    async with contextlib.AsyncExitStack() as stack:
        redis_url = settings.redis_url if os.environ.get("PIC_REDIS_URL") else (
            await stack.enter_async_context(embedded_redis(state_dir / "redis")))
        import dataclasses

        settings = dataclasses.replace(settings, redis_url=redis_url, admin_token=token)
        node_ids = [f"pi-demo-{i}" for i in range(1, nodes + 1)]
        # Each simulated agent gets its own Redis user, as a real Pi does.
        url_files = {node: path for node, (path, _) in (await write_url_files(
            settings, node_ids, state_dir.resolve() / "agents")).items()}
        agents = [subprocess.Popen(agent_command(url_files[n], n, settings.redis_prefix),
                                   stdin=subprocess.DEVNULL) for n in node_ids]

        def stop_agents() -> None:
            for process in agents:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in agents:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()

        stack.callback(stop_agents)
        stop, started = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(settings, stop, started), name="controller")
        try:
            await started.wait()
            await seed_pins(settings, node_ids)
            url = f"http://{settings.host}:{settings.port}/"
            print(f"\nPi-Controller demo is running with {nodes} simulated Pis.\n"
                  f"  Web UI:       {url}\n"
                  f"  Admin token:  {token}\n"
                  f"  Events:       {cli_path()} events --follow --url {url} --token {token}\n"
                  f"  REST:         curl -H 'Authorization: Bearer {token}' {url}api/v1/nodes\n"
                  "Press Ctrl-C to stop.\n", flush=True)
            await server
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await server
