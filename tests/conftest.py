"""Fixtures: a real redis-server per session (flushed per test), private ones to kill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own (AOF on), to stop and restart."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def rds(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis (flushed per test)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session:
        yield session


class RunningController:
    def __init__(self, url: str, app: object) -> None:
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/ws"
        self.app = app


@contextlib.asynccontextmanager
async def running_controller(redis_url: str, **overrides: Any
                             ) -> AsyncIterator[RunningController]:
    """The controller application in this process, on a free port, against real Redis,
    with ``overrides`` of its settings."""
    from aiohttp import web

    from controller import appkeys
    from controller.app import create_app
    from controller.settings import ControllerSettings
    from tests.support.redis_server import free_port

    port = free_port()
    settings = ControllerSettings(**{"redis_url": redis_url, "port": port,
                                     "admin_token": ADMIN_TOKEN, **overrides})
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    await app[appkeys.FEED].ready.wait()
    await app[appkeys.BOOTSTRAPPED].wait()
    yield RunningController(f"http://127.0.0.1:{port}", app)
    try:
        async with asyncio.timeout(30):
            await runner.cleanup()
    except TimeoutError:
        stacks = "\n".join(f"{task.get_name()}: {task.get_stack(limit=8)}"
                           for task in asyncio.all_tasks())
        raise AssertionError(f"controller shutdown hung; tasks:\n{stacks}") from None


@pytest.fixture
async def controller(redis_url: str) -> AsyncIterator[RunningController]:
    """The controller with default settings."""
    async with running_controller(redis_url) as running:
        yield running
