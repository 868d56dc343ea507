"""GPIO through pigpiod (Raspberry Pi 1-4), with the ``pigpio`` client library.

Hardware PWM (pigpio's HP command) on BCM 12, 13, 18 and 19 when a frequency is given;
software PWM otherwise. Threads, deadlines and reconnection: agent.gpio.daemon.

pigpiod has no authentication: keep it listening on localhost (``pigpiod -l``).
"""

from __future__ import annotations

import atexit
import contextlib
from typing import Any

import pigpio

from agent.gpio.daemon import DaemonBackend, shutdown
from common.gpio import HARDWARE_PWM_PINS, Mode, Pull

PWM_RANGE = 1000
"""Software PWM steps: 0.1 % resolution."""
HW_DUTY_SCALE = 10_000
"""Hardware PWM duty is 0-1,000,000; ours is 0-100 %."""

_PULL = {"none": pigpio.PUD_OFF, "up": pigpio.PUD_UP, "down": pigpio.PUD_DOWN}


class PigpioBackend(DaemonBackend):
    name = "pigpio"
    daemon = "pigpiod"
    library_error = pigpio.error

    def __init__(self, host: str = "127.0.0.1", port: int = 8888, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)

    async def set_mode(self, pin: int, mode: Mode, pull: Pull) -> None:
        level_mode = pigpio.INPUT if mode == "input" else pigpio.OUTPUT

        def run(pi: Any) -> None:
            pi.set_mode(pin, level_mode)
            pi.set_pull_up_down(pin, _PULL[pull])

        await self._call(f"set_mode({pin}, {mode})", run)

    async def write(self, pin: int, level: int) -> None:
        await self._call(f"write({pin}, {level})", lambda pi: pi.write(pin, level))

    async def read(self, pin: int) -> int:
        return int(await self._call(f"read({pin})", lambda pi: pi.read(pin)))

    async def set_pwm(self, pin: int, duty_percent: float, frequency: int | None) -> None:
        if frequency and pin in HARDWARE_PWM_PINS:
            duty = round(duty_percent * HW_DUTY_SCALE)
            await self._call(f"hardware_PWM({pin}, {frequency} Hz)",
                             lambda pi: pi.hardware_PWM(pin, frequency, duty))
            return

        def run(pi: Any) -> None:
            if frequency:
                pi.set_PWM_frequency(pin, frequency)
            pi.set_PWM_range(pin, PWM_RANGE)
            pi.set_PWM_dutycycle(pin, round(duty_percent * PWM_RANGE / 100))

        await self._call(f"PWM({pin}, {duty_percent}%)", run)

    async def set_servo(self, pin: int, pulse_width_us: int) -> None:
        await self._call(f"servo({pin}, {pulse_width_us} us)",
                         lambda pi: pi.set_servo_pulsewidth(pin, pulse_width_us))

    # --- DaemonBackend hooks --------------------------------------------------------------

    def _connect(self) -> Any:
        pi = pigpio.pi(self._host, self._port, False)
        return pi if pi.connected else None

    def _stop(self, client: Any) -> None:
        atexit.unregister(client.stop)  # registered by the client; one per connection
        client.stop()

    def _ping(self, client: Any) -> object:
        return client.get_current_tick()

    def _arm(self, client: Any, pin: int) -> Any:
        return client.callback(pin, pigpio.EITHER_EDGE,
                               lambda gpio, level, _tick: self._from_thread(gpio, level))

    def _disarm(self, client: Any, pin: int, handle: Any) -> None:
        handle.cancel()

    def _abandon(self, client: Any) -> None:
        # Shutting the command socket down wakes a thread blocked on it; stop() tells the
        # notification thread to end, and shutting its socket down wakes it to notice.
        command = getattr(getattr(client, "sl", None), "s", None)
        notify = getattr(getattr(getattr(client, "_notify", None), "sl", None), "s", None)
        atexit.unregister(client.stop)
        shutdown(command)
        with contextlib.suppress(Exception):
            client.stop()
        shutdown(notify)
        if command is not None:
            with contextlib.suppress(OSError):
                command.close()
