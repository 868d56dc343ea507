"""A simulated GPIO bank: for the demo, tests and development off a Pi."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from agent.gpio.backend import BackendError, EdgeCallback
from common.gpio import BCM_PINS, Mode, Pull
from common.tasks import stop


class SimBackend:
    name = "sim"

    def __init__(self, *, input_interval: float = 0.0, seed: int | None = None) -> None:
        self._levels: dict[int, int] = {}
        self._modes: dict[int, Mode] = {}
        self._pwm: dict[int, float] = {}
        self._watchers: dict[int, EdgeCallback] = {}
        self._input_interval = input_interval
        self._random = random.Random(seed)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._input_interval > 0:
            self._task = asyncio.create_task(self._wiggle_inputs(), name="sim input changes")

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
            self._task = None

    def _check(self, pin: int) -> None:
        if pin not in BCM_PINS:
            raise BackendError(f"bad gpio {pin}")

    async def set_mode(self, pin: int, mode: Mode, pull: Pull) -> None:
        self._check(pin)
        self._modes[pin] = mode
        if mode == "input":
            self._levels.setdefault(pin, 1 if pull == "up" else 0)

    async def write(self, pin: int, level: int) -> None:
        self._check(pin)
        self._levels[pin] = level

    async def read(self, pin: int) -> int:
        self._check(pin)
        return self._levels.get(pin, 0)

    async def set_pwm(self, pin: int, duty_percent: float, frequency: int | None) -> None:
        self._check(pin)
        self._pwm[pin] = duty_percent
        self._levels[pin] = 1 if duty_percent > 0 else 0

    async def set_servo(self, pin: int, pulse_width_us: int) -> None:
        self._check(pin)
        self._levels[pin] = 1 if pulse_width_us else 0

    async def watch(self, pin: int, debounce_ms: int, callback: EdgeCallback) -> None:
        self._check(pin)
        self._watchers[pin] = callback

    async def unwatch(self, pin: int) -> None:
        self._watchers.pop(pin, None)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """The simulated bank is never lost."""

    def inject(self, pin: int, level: int) -> None:
        """Drive an input as the outside world would; watchers hear the edge."""
        if self._levels.get(pin) == level:
            return
        self._levels[pin] = level
        callback = self._watchers.get(pin)
        if callback is not None:
            callback(pin, level)

    async def _wiggle_inputs(self) -> None:
        while True:
            await asyncio.sleep(self._input_interval * (0.5 + self._random.random()))
            inputs = [pin for pin, mode in self._modes.items() if mode == "input"]
            if inputs:
                pin = self._random.choice(inputs)
                self.inject(pin, 1 - self._levels.get(pin, 0))
