"""A cancellation checkpoint for long-running loops.

On Python 3.11, ``asyncio.wait_for`` returns the result and drops a cancellation that lands
as the awaited call completes; redis-py sends every command through ``wait_for`` when a
socket timeout is set. A loop that only awaits Redis and short sleeps can therefore swallow
the one cancel that shutdown sends, and run on forever. The task still counts the request
(``Task.cancelling()``), so a loop that checks it once per round stops as it should.
"""

from __future__ import annotations

import asyncio


def checkpoint() -> None:
    """Raise CancelledError if this task was asked to stop and the request got lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
