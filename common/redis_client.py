"""Redis connections with reconnect and backoff, shared by agent and controller."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.settings import mask_url

logger = logging.getLogger(__name__)

Redis: TypeAlias = Any
"""A ``redis.asyncio.Redis`` client (its replies are untyped here: see pyproject's mypy notes)."""

UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean 'Redis is not reachable right now': retry later, never crash."""

UNAVAILABLE_OR_TIMEOUT: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


def connect(url: str, *, retries: int = 3, socket_timeout: float | None = 10.0,
            max_connections: int = 64, ca_file: str = "") -> Redis:
    """A client that retries a failed command a few times with jittered exponential backoff.

    ``rediss://`` URLs verify the server against ``ca_file`` (else the system's CAs).
    Nothing is sent until the first command. ``socket_timeout`` must exceed any BLOCK time
    used on this client. The pool is bounded and blocking: a burst (a thousand dashboards
    reconnecting at once) waits for a connection instead of failing. Replies stay bytes.
    """
    tls: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file and url.startswith(
        "rediss://") else {}
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **tls,
        max_connections=max_connections,
        timeout=20,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=3.0,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


async def wait_until_ready(client: Redis, url: str, *, timeout: float | None = 30.0) -> None:
    """Wait for PING to answer, logging (without the password) while it does not."""
    delay = 0.05
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.ping()
                return
            except UNAVAILABLE as err:
                logger.warning("Redis at %s not reachable yet (%s); retrying", mask_url(url),
                               type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
