"""Long-lived background tasks with an owner, a name, a guard and an orderly shutdown.

On Python 3.11, ``asyncio.wait_for`` can return a result and drop a cancellation that lands
as the awaited call completes; redis-py sends every command through it when a socket timeout
is set. So a loop that mostly awaits Redis may swallow the one cancel that shutdown sends.
Two defences: loops call ``checkpoint()`` once per round (the task still counts the request,
``Task.cancelling()``), and ``TaskOwner.close`` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


def checkpoint() -> None:
    """Raise CancelledError if this task was asked to stop and the request got lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def guarded(name: str, run: Callable[[], Awaitable[None]], *,
                  restart: bool = True, max_delay: float = 5.0) -> None:
    """Run ``run`` forever: log when it fails or returns, and restart it with backoff.

    Redis going away is expected (a warning, no traceback); anything else is a bug and is
    logged with its traceback.
    """
    from common.redis_client import UNAVAILABLE  # here: redis is heavy, tasks is not

    delay = 0.1
    while True:
        checkpoint()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE as err:
            logger.warning("%s: Redis unreachable (%s); retrying", name, type(err).__name__)
        except Exception:
            logger.exception("%s failed", name)
        else:
            if not restart:
                return
            logger.warning("%s finished unexpectedly", name)
        if not restart:
            return
        checkpoint()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


class TaskOwner:
    """Owns named tasks; ``close`` cancels them in reverse start order and awaits each."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool = True
              ) -> asyncio.Task[None]:
        task = asyncio.create_task(guarded(name, run, restart=restart), name=name)
        self._tasks.append(task)
        return task

    def adopt(self, task: asyncio.Task[None]) -> None:
        self._tasks.append(task)

    async def close(self) -> None:
        while self._tasks:
            await stop(self._tasks.pop())


async def stop(task: asyncio.Task[object], retry: float = 0.5) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again if a cancel got lost."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
