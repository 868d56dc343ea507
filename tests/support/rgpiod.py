"""An rgpiod-protocol server (lgpio's daemon, the Raspberry Pi 5's GPIO) for tests.

The real ``rgpio`` client talks to it over TCP. It keeps, per GPIO line of gpiochip 0, who
claimed it and how (input with pull flags, output, alert), its level, and software PWM /
servo pulses, answers with lgpio's error codes, and pushes 16-byte alert reports to the
notification socket named in an alert claim.

Protocol (rgpio.py): request ``struct 'IIHHHH'`` = magic, length of the extension that
follows, cmd, and three words the daemon does not need; the extension holds the
arguments as uint32s. Response: 16 bytes whose first uint32 is the status (negative, as
int32, is an error). Alerts: ``'QBBBBI'`` = tick (ns), chip, gpio, level, flags, padding.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass

from tests.support.daemon import FakeDaemon

MAGIC = 1818715245
GO, GC, GSIX, GSOX, GSAX, GSF, GR, GW, PX, SX, GDEB = 10, 11, 12, 13, 14, 15, 19, 20, 24, 25, 29
NC, NOIB, SBC, FREE, LGV, TICK = 71, 117, 120, 121, 140, 141
SBC_NAME = b"pi5-test"

BAD_HANDLE, NOT_PERMITTED, UNKNOWN_COMMAND, BAD_GPIO_NUMBER = -5, -7, -47, -73
GPIO_BUSY, GPIO_NOT_ALLOCATED, BAD_GPIOCHIP = -79, -80, -89
BAD_SERVO_FREQ, BAD_SERVO_WIDTH, BAD_PWM_FREQ, BAD_PWM_DUTY = -100, -101, -102, -103
GPIO_NOT_AN_OUTPUT = -104

SET_PULL_UP, SET_PULL_DOWN = 32, 64
LINES = 54  # gpiochip 0 of a Raspberry Pi 5 (RP1)
LG_VERSION = 0x00020200


@dataclass
class Line:
    owner: int | None = None
    """The chip handle that claimed it."""
    kind: str = "free"  # free | input | output | alert
    driven: int = 0
    external: int = 0
    notify: int | None = None
    debounce_us: int = 0
    pwm: tuple[float, float] | None = None
    """(frequency Hz, duty %) while software PWM runs."""
    servo: tuple[int, int] | None = None
    """(pulse width us, frequency Hz) while servo pulses run."""

    @property
    def level(self) -> int:
        return self.driven if self.kind == "output" else self.external


class FakeRgpiod(FakeDaemon):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.lines: dict[int, Line] = {}
        self.writes: list[tuple[int, int]] = []
        self._handles: dict[int, int] = {}
        """chip handle -> connection id."""
        self._notifiers: dict[int, asyncio.StreamWriter] = {}
        self._next = 0
        self._refusals: dict[int, int] = {}
        self._start = time.monotonic_ns()

    # --- what tests use -----------------------------------------------------------------

    def line(self, gpio: int) -> Line:
        return self.lines.setdefault(gpio, Line())

    def level(self, gpio: int) -> int:
        return self.line(gpio).level

    def watched(self, gpio: int) -> bool:
        line = self.lines.get(gpio)
        return line is not None and line.kind == "alert" and line.notify in self._notifiers

    def inject(self, gpio: int, level: int) -> None:
        line = self.line(gpio)
        before = line.level
        line.external = level
        if line.level != before:
            self._alert(gpio, line)

    def refuse(self, gpio: int, code: int = NOT_PERMITTED) -> None:
        self._refusals[gpio] = code

    # --- the protocol -------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self._new_id()
        try:
            while True:
                try:
                    header = await reader.readexactly(16)
                    magic, length, cmd = struct.unpack("IIH", header[:10])
                    extra = await reader.readexactly(length) if length else b""
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if magic != MAGIC:
                    return
                args = struct.unpack(f"{len(extra) // 4}I", extra[: len(extra) // 4 * 4])
                if cmd == NOIB:
                    handle = self._new_id()
                    self._notifiers[handle] = writer
                    writer.write(struct.pack("iIHHHH", handle, 0, cmd, 0, 0, 0))
                    await writer.drain()
                    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                        await reader.read()  # nothing comes here; wait for the close
                    self._notifiers.pop(handle, None)
                    return
                if cmd == SBC:  # the status is a length, the name follows
                    writer.write(struct.pack("iIHHHH", len(SBC_NAME), 0, cmd, 0, 0, 0))
                    writer.write(SBC_NAME)
                    await writer.drain()
                    continue
                status = self._execute(connection, cmd, args)
                writer.write(struct.pack("iIHHHH", status, 0, cmd, 0, 0, 0))
                await writer.drain()
        finally:
            self._free(connection)

    def _free(self, connection: int) -> None:
        handles = {h for h, c in self._handles.items() if c == connection}
        for handle in handles:
            self._handles.pop(handle)
            for line in self.lines.values():
                if line.owner == handle:
                    self._release(line)

    @staticmethod
    def _release(line: Line) -> None:
        line.owner, line.kind, line.notify = None, "free", None
        line.pwm = line.servo = None

    def _alert(self, gpio: int, line: Line) -> None:
        writer = self._notifiers.get(line.notify) if line.notify is not None else None
        if line.kind == "alert" and writer is not None and not writer.is_closing():
            tick = time.monotonic_ns() - self._start
            writer.write(struct.pack("QBBBBI", tick, 0, gpio, line.level, 0, 0))

    def _claim(self, handle: int, gpio: int, kind: str) -> tuple[int, Line | None]:
        if handle not in self._handles:
            return BAD_HANDLE, None
        if gpio >= LINES:
            return BAD_GPIO_NUMBER, None
        if gpio in self._refusals:
            return self._refusals[gpio], None
        line = self.line(gpio)
        if line.owner is not None and line.owner != handle:
            return GPIO_BUSY, None
        line.owner, line.kind = handle, kind
        line.pwm = line.servo = None
        return 0, line

    def _claimed(self, handle: int, gpio: int) -> tuple[int, Line | None]:
        if handle not in self._handles:
            return BAD_HANDLE, None
        if gpio >= LINES:
            return BAD_GPIO_NUMBER, None
        if gpio in self._refusals:
            return self._refusals[gpio], None
        line = self.lines.get(gpio)
        if line is None or line.owner != handle:
            return GPIO_NOT_ALLOCATED, None
        return 0, line

    def _pull(self, gpio: int, line: Line, flags: int) -> None:
        before = line.level
        if flags & SET_PULL_UP:
            line.external = 1
        elif flags & SET_PULL_DOWN:
            line.external = 0
        if line.level != before:
            self._alert(gpio, line)

    def _execute(self, connection: int, cmd: int, a: tuple[int, ...]) -> int:
        if cmd == GO:
            if a[0] != 0:
                return BAD_GPIOCHIP
            handle = self._new_id()
            self._handles[handle] = connection
            return handle
        if cmd == GC:
            if self._handles.pop(a[0], None) is None:
                return BAD_HANDLE
            for line in self.lines.values():
                if line.owner == a[0]:
                    self._release(line)
            return 0
        if cmd in (GSIX, GSAX):
            handle, flags = a[0], a[1]
            gpio = a[2] if cmd == GSIX else a[3]
            status, line = self._claim(handle, gpio, "input" if cmd == GSIX else "alert")
            if line is not None:
                if cmd == GSAX:
                    line.notify = a[4]
                self._pull(gpio, line, flags)
            return status
        if cmd == GSOX:
            status, line = self._claim(a[0], a[2], "output")
            if line is not None:
                self.writes.append((a[2], a[3]))
                line.driven = a[3]
            return status
        if cmd == GSF:
            status, line = self._claimed(a[0], a[1])
            if line is not None:
                self._release(line)
            return status
        if cmd == GR:
            status, line = self._claimed(a[0], a[1])
            return line.level if line is not None else status
        if cmd in (GW, PX, SX):
            status, line = self._claimed(a[0], a[1])
            if line is None:
                return status
            if line.kind != "output":
                return GPIO_NOT_AN_OUTPUT
            if cmd == GW:
                line.pwm = line.servo = None
                self.writes.append((a[1], a[2]))
                line.driven = a[2]
                return 0
            if cmd == PX:
                frequency, duty = a[2] / 1000, a[3] / 1000
                if not 0.1 <= frequency <= 10_000:
                    return BAD_PWM_FREQ
                if duty > 100:
                    return BAD_PWM_DUTY
                line.servo = None
                line.pwm = (frequency, duty) if duty else None
                line.driven = int(duty > 0)
                return 1
            width, frequency = a[2], a[3]
            if width and not 500 <= width <= 2500:
                return BAD_SERVO_WIDTH
            if not 40 <= frequency <= 500:
                return BAD_SERVO_FREQ
            line.pwm = None
            line.servo = (width, frequency) if width else None
            line.driven = int(width > 0)
            return 1
        if cmd == GDEB:
            status, line = self._claimed(a[0], a[1])
            if line is not None:
                line.debounce_us = a[2]
            return status
        if cmd == NC:
            writer = self._notifiers.pop(a[0], None)
            if writer is None:
                return BAD_HANDLE
            writer.close()
            return 0
        if cmd == FREE:
            self._free(connection)
            return 0
        if cmd == LGV:
            return LG_VERSION
        if cmd == TICK:
            return 0
        return UNKNOWN_COMMAND
