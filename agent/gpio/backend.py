"""The interface every GPIO backend implements (sim, pigpio, rgpio)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from common.gpio import Mode, Pull

EdgeCallback = Callable[[int, int], None]
"""Called on the event loop with (BCM pin, new level 0/1) after debounce."""


class BackendError(Exception):
    """The hardware call failed: daemon not running, permission denied, bad pin."""


class GpioBackend(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def set_mode(self, pin: int, mode: Mode, pull: Pull) -> None: ...

    async def write(self, pin: int, level: int) -> None: ...

    async def read(self, pin: int) -> int: ...

    async def set_pwm(self, pin: int, duty_percent: float, frequency: int | None) -> None: ...

    async def set_servo(self, pin: int, pulse_width_us: int) -> None: ...

    async def watch(self, pin: int, debounce_ms: int, callback: EdgeCallback) -> None: ...

    async def unwatch(self, pin: int) -> None: ...

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) whenever the backend regains its hardware after
        losing it, since the pins' modes, PWM and callbacks may have been lost with it."""
