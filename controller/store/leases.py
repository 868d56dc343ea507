"""Singleton duties under a lease in Redis: exactly one replica runs them at a time.

A replica that holds the lease renews it every third of its TTL; one that loses it (Redis
away, process paused) stops the duty before the TTL can run out for others, and another
replica takes over within one TTL of the holder's death. Duties must still write their
transitions with compare-and-set: a lease narrows overlap, it cannot rule it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from common.redis_client import UNAVAILABLE, UNAVAILABLE_OR_TIMEOUT, Redis
from common.tasks import checkpoint, stop

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, redis: Redis, key: str, holder: str, ttl: float) -> None:
        self._redis = redis
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.held = False

    async def acquire(self) -> bool:
        ok = await self._redis.set(self.key, self.holder, nx=True, px=int(self.ttl * 1000))
        if not ok:
            current = await self._redis.get(self.key)
            ok = current is not None and current.decode() == self.holder
        self.held = bool(ok)
        return self.held

    async def renew(self) -> bool:
        renewed = await self._redis.eval(_RENEW, 1, self.key, self.holder,
                                         int(self.ttl * 1000))
        self.held = bool(renewed)
        return self.held

    async def release(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self._redis.eval(_RELEASE, 1, self.key, self.holder)
        self.held = False

    async def run_while_held(self, name: str,
                             duty: Callable[[], Coroutine[Any, Any, None]],
                             share: FairShare | None = None) -> None:
        """Forever: wait for the lease, run ``duty`` while it is held, stop it when lost.

        With ``share`` (one of several sharded leases), take it only while this replica
        holds less than its fair share, and hand it back when it holds more."""
        step = self.ttl / 3
        while True:
            checkpoint()  # a Redis call below may have lost shutdown's cancel
            if share is not None and not share.claim():
                await asyncio.sleep(step)
                continue
            try:
                acquired = await self.acquire()
            except UNAVAILABLE:
                acquired = False
            if not acquired:
                if share is not None:
                    share.give_back()
                await asyncio.sleep(step)
                continue
            logger.info("took the %s lease (%s)", name, self.key)
            task = asyncio.create_task(duty(), name=name)
            handed_over = False
            try:
                while not task.done():
                    done, _ = await asyncio.wait({task}, timeout=step)
                    if done:
                        break
                    try:
                        # Not wait_for: on Python 3.11 it can swallow a cancellation that
                        # lands as the renewal completes, and this loop would then outlive
                        # shutdown. asyncio.timeout only ever converts its own cancel.
                        async with asyncio.timeout(step):
                            still = await self.renew()
                    except UNAVAILABLE_OR_TIMEOUT:
                        still = False
                    if not still:
                        logger.warning("lost the %s lease; stopping the duty", name)
                        break
                    if share is not None and share.surplus():
                        handed_over = True
                        logger.info("handing the %s lease to another replica", name)
                        break
                    checkpoint()
            finally:
                await stop(task)
                if self.held:
                    await self.release()
                if share is not None and not handed_over:
                    share.give_back()
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("%s failed: %s", name, task.exception())
            # After handing a lease over, leave it to the others for a while.
            await asyncio.sleep(self.ttl * 2 if handed_over else step)


class FairShare:
    """How many of ``total`` sharded leases this replica should hold: an even share among
    the live replicas (``Presence``). Decisions reserve their slot at once, so the shards'
    loops never all take, or all hand back, together."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self.replicas = 1

    @property
    def quota(self) -> int:
        return -(-self.total // max(self.replicas, 1))

    def claim(self) -> bool:
        if self.held >= self.quota:
            return False
        self.held += 1
        return True

    def give_back(self) -> None:
        self.held = max(self.held - 1, 0)

    def surplus(self) -> bool:
        if self.held <= self.quota:
            return False
        self.held -= 1
        return True


class Presence:
    """This replica's presence among the controller replicas (``pic:replicas``)."""

    def __init__(self, redis: Redis, key: str, instance: str, ttl: float) -> None:
        self._redis = redis
        self._key = key
        self._instance = instance
        self._ttl = ttl

    async def beat(self) -> int:
        """Say this replica is alive for one more TTL; returns how many replicas are."""
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {self._instance: now + self._ttl})
            pipe.zremrangebyscore(self._key, "-inf", now)
            pipe.zcard(self._key)
            *_, count = await pipe.execute()
        return int(count)

    async def leave(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self._redis.zrem(self._key, self._instance)

    async def keep(self, share: FairShare) -> None:
        """Forever: beat every third of the TTL and tell ``share`` how many replicas live."""
        try:
            while True:
                with contextlib.suppress(*UNAVAILABLE):
                    share.replicas = await self.beat()
                await asyncio.sleep(self._ttl / 3)
        finally:
            await self.leave()
