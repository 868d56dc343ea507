"""Long-lived background tasks with an owner, a name, a guard and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


async def guarded(name: str, run: Callable[[], Awaitable[None]], *,
                  restart: bool = True, max_delay: float = 5.0) -> None:
    """Run ``run`` forever: log when it fails or returns, and restart it with backoff."""
    delay = 0.1
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed", name)
        else:
            if not restart:
                return
            logger.warning("%s finished unexpectedly", name)
        if not restart:
            return
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
            task = self._tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
