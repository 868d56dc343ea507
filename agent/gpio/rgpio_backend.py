"""GPIO through rgpiod (lgpio's daemon; the Raspberry Pi 5, where pigpio does not run),
with the ``rgpio`` client library.

lgpio works on the kernel's GPIO character device: a line is *claimed* as an input (with
its pull), an output (with its level) or an alert source. An output is claimed at the
level it should have, on the first write, so declaring a relay ``high`` never glitches it
low first. PWM and servo pulses are software-timed by rgpiod (up to 10 kHz); there is no
hardware PWM here. Threads, deadlines and reconnection: agent.gpio.daemon.

rgpiod has no authentication by default: keep it on localhost (``rgpiod -n localhost``).
"""

from __future__ import annotations

import atexit
import contextlib
from dataclasses import dataclass, field
from typing import Any

import rgpio

from agent.gpio.daemon import DaemonBackend, shutdown
from common.gpio import Mode, Pull

DEFAULT_PWM_HZ = 800
"""Used when a PWM pin declares no frequency (pigpio's default too)."""
SERVO_HZ = 50

_PULL = {"none": rgpio.SET_PULL_NONE, "up": rgpio.SET_PULL_UP, "down": rgpio.SET_PULL_DOWN}


@dataclass
class _Connection:
    sbc: Any
    chip: int
    claimed: dict[int, str] = field(default_factory=dict)
    """What each line is claimed as on this connection (claims die with it)."""


class RgpioBackend(DaemonBackend):
    name = "rgpio"
    daemon = "rgpiod"
    library_error = rgpio.error

    def __init__(self, host: str = "127.0.0.1", port: int = 8889, *, chip: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._chip = chip
        self._pulls: dict[int, int] = {}

    async def set_mode(self, pin: int, mode: Mode, pull: Pull) -> None:
        flags = self._pulls[pin] = _PULL[pull]
        if mode != "input":
            # Claimed on the first write, at the right level (see the module docstring).
            def forget(conn: _Connection) -> None:
                if conn.claimed.get(pin) not in (None, "output"):
                    conn.sbc.gpio_free(conn.chip, pin)
                    del conn.claimed[pin]

            await self._call(f"set_mode({pin}, {mode})", forget)
            return
        watched = pin in self._watches

        def claim(conn: _Connection) -> None:
            if watched:
                conn.sbc.gpio_claim_alert(conn.chip, pin, rgpio.BOTH_EDGES, flags)
                conn.claimed[pin] = "alert"
            else:
                conn.sbc.gpio_claim_input(conn.chip, pin, flags)
                conn.claimed[pin] = "input"

        await self._call(f"set_mode({pin}, input)", claim)

    def _output(self, conn: _Connection, pin: int, level: int) -> bool:
        """Claim the line as an output at ``level`` if it is not one; True if it was."""
        if conn.claimed.get(pin) == "output":
            return True
        conn.sbc.gpio_claim_output(conn.chip, pin, level, self._pulls.get(pin, 0))
        conn.claimed[pin] = "output"
        return False

    async def write(self, pin: int, level: int) -> None:
        def run(conn: _Connection) -> None:
            if self._output(conn, pin, level):
                conn.sbc.gpio_write(conn.chip, pin, level)

        await self._call(f"write({pin}, {level})", run)

    async def read(self, pin: int) -> int:
        return int(await self._call(f"read({pin})",
                                    lambda conn: conn.sbc.gpio_read(conn.chip, pin)))

    async def set_pwm(self, pin: int, duty_percent: float, frequency: int | None) -> None:
        def run(conn: _Connection) -> None:
            self._output(conn, pin, 0)
            conn.sbc.tx_pwm(conn.chip, pin, frequency or DEFAULT_PWM_HZ, duty_percent)

        await self._call(f"tx_pwm({pin}, {frequency or DEFAULT_PWM_HZ} Hz, {duty_percent}%)",
                         run)

    async def set_servo(self, pin: int, pulse_width_us: int) -> None:
        def run(conn: _Connection) -> None:
            self._output(conn, pin, 0)
            conn.sbc.tx_servo(conn.chip, pin, pulse_width_us, SERVO_HZ)

        await self._call(f"tx_servo({pin}, {pulse_width_us} us)", run)

    # --- DaemonBackend hooks --------------------------------------------------------------

    def _connect(self) -> Any:
        sbc = rgpio.sbc(self._host, self._port, False)
        if not sbc.connected:
            return None
        try:
            chip = sbc.gpiochip_open(self._chip)
        except rgpio.error:
            atexit.unregister(sbc.stop)
            sbc.stop()
            raise
        return _Connection(sbc, chip)

    def _stop(self, client: Any) -> None:
        atexit.unregister(client.sbc.stop)  # registered by the client; one per connection
        client.sbc.stop()

    def _ping(self, client: Any) -> object:
        return client.sbc.get_sbc_name()

    def _arm(self, client: Any, pin: int) -> Any:
        conn: _Connection = client
        conn.sbc.gpio_claim_alert(conn.chip, pin, rgpio.BOTH_EDGES, self._pulls.get(pin, 0))
        conn.claimed[pin] = "alert"
        return conn.sbc.callback(conn.chip, pin, rgpio.BOTH_EDGES,
                                 lambda _chip, gpio, level, _tick: self._from_thread(gpio, level))

    def _disarm(self, client: Any, pin: int, handle: Any) -> None:
        handle.cancel()

    def _abandon(self, client: Any) -> None:
        sbc = client.sbc
        command = getattr(getattr(sbc, "sl", None), "s", None)
        notify = getattr(getattr(getattr(sbc, "_notify", None), "sl", None), "s", None)
        atexit.unregister(sbc.stop)
        shutdown(command)
        with contextlib.suppress(Exception):
            sbc.stop()
        shutdown(notify)
        if command is not None:
            with contextlib.suppress(OSError):
                command.close()
