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
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from common.errors import ConflictError, NotReplicatedError
from common.redis_client import Redis

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Confirm:
    """Writes that matter wait (WAIT) until ``replicas`` replicas hold them, at most
    ``timeout_ms``; fewer is a NotReplicatedError (503): the write is on the primary only."""

    replicas: int
    timeout_ms: int


class _ConfirmingPipeline(Pipeline):  # type: ignore[misc]  # redis is untyped here
    """A transaction followed by WAIT on the same connection (WAIT counts the writes of
    the connection that asks, so it cannot go through the pool on its own)."""

    confirm: Confirm | None = None

    async def _execute_transaction(self, connection: Any, commands: Any,
                                   raise_on_error: bool) -> Any:
        result = await super()._execute_transaction(connection, commands, raise_on_error)
        if self.confirm is not None:
            await connection.send_command("WAIT", self.confirm.replicas,
                                          self.confirm.timeout_ms)
            acked = int(await connection.read_response())
            if acked < self.confirm.replicas:
                raise NotReplicatedError(
                    f"saved on the Redis primary, but {acked} of {self.confirm.replicas} "
                    f"replica(s) confirmed it within {self.confirm.timeout_ms} ms: it may be "
                    "lost if the primary fails now")
        return result

ATTEMPTS = 20
"""Collisions before giving up: each attempt re-reads, so only a hot key exhausts them."""


async def transact(redis: Redis, watch: Sequence[str], body: Callable[[Pipeline], Awaitable[T]],
                   *, what: str, field: str = "metadata.name", confirm: Confirm | None = None
                   ) -> T:
    """Run ``body`` inside WATCH ``watch`` ... MULTI/EXEC until it commits; returns its result.

    Raises ConflictError naming ``field`` when every attempt collided; with ``confirm``,
    NotReplicatedError when too few replicas confirmed the commit in time.
    """
    for attempt in range(ATTEMPTS):
        async with _pipeline(redis, confirm) as pipe:
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


def _pipeline(redis: Redis, confirm: Confirm | None) -> Pipeline:
    if confirm is None:
        return redis.pipeline(transaction=True)
    pipe = _ConfirmingPipeline(redis.connection_pool, redis.response_callbacks, True, None)
    pipe.confirm = confirm
    return pipe
