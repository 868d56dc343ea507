"""The one way to write state under optimistic locking: WATCH, read, MULTI, EXEC, retry.

Every read-decide-write of shared state goes through ``transact``: the body reads the watched
keys (the pipeline is in immediate mode until ``pipe.multi()``), decides, then stages its
writes after ``pipe.multi()``. If a watched key changed before EXEC, the body runs again on
fresh data after a short jittered pause; after ``ATTEMPTS`` collisions the write gives up
with a ``ConflictError`` (409 on REST). A body that decides nothing needs writing simply
returns without calling ``pipe.multi()``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from common.errors import ConflictError
from common.redis_client import Redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 20
"""Collisions before giving up: each attempt re-reads, so only a hot key exhausts them."""


async def transact(redis: Redis, watch: Sequence[str], body: Callable[[Pipeline], Awaitable[T]],
                   *, what: str, field: str = "metadata.name") -> T:
    """Run ``body`` inside WATCH ``watch`` ... MULTI/EXEC until it commits; returns its result.

    Raises ConflictError naming ``field`` when every attempt collided.
    """
    for attempt in range(ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            if watch:
                await pipe.watch(*watch)
            result = await body(pipe)
            if not pipe.explicit_transaction:
                return result
            try:
                await pipe.execute()
            except WatchError:
                # Jitter spreads writers that collided, so they do not collide again.
                await asyncio.sleep(random.uniform(0, 0.002) * (attempt + 1))
                continue
            return result
    logger.warning("%s: gave up after %d contended attempts", what, ATTEMPTS)
    raise ConflictError(field, f"{what} is being changed by others at the same time; retry")
