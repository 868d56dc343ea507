"""Debounce on the event loop: a level is reported once it has held for the debounce time.

Contact bounce and glitches shorter than that never reach the callback. Used by the
backends whose daemon reports every edge (pigpio, rgpio).
"""

from __future__ import annotations

import asyncio

from agent.gpio.backend import EdgeCallback


class Debouncer:
    def __init__(self, pin: int, debounce_ms: int, callback: EdgeCallback) -> None:
        self.pin = pin
        self.debounce_ms = debounce_ms
        self._callback = callback
        self._timer: asyncio.TimerHandle | None = None
        self._pending: int | None = None

    def edge(self, level: int) -> None:
        """An edge as the daemon saw it; call on the event loop."""
        if not self.debounce_ms:
            self._callback(self.pin, level)
            return
        self._pending = level
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            self.debounce_ms / 1000, self._settled)

    def _settled(self) -> None:
        self._timer = None
        if self._pending is not None:
            level, self._pending = self._pending, None
            self._callback(self.pin, level)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = None
