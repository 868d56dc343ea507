"""A pigpiod-protocol server for tests: the real ``pigpio`` client talks to it over TCP.

It keeps what pigpiod keeps per GPIO (mode, pull, level, PWM duty/range/frequency, servo
pulse width, hardware PWM), answers with pigpiod's error codes, and pushes 12-byte
notification reports to clients that opened a notification socket (NOIB) and chose their
GPIOs (NB). A test drives inputs with ``inject`` (as the outside world would) and reads
what a pin was driven to with ``level`` and ``writes``.

Protocol (pigpio's socket interface): request ``struct 'IIII'`` = cmd, p1, p2, p3, where p3
is the number of extra bytes that follow; response ``'IIII'`` echoing cmd, p1, p2 and the
result as the fourth word (negative, as int32, is an error).
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

from tests.support.daemon import FakeDaemon

# Commands (pigpio.py's _PI_CMD_*).
MODES, MODEG, PUD, READ, WRITE, PWM, PRS, PFS, SERVO, WDOG, BR1 = range(11)
TICK, HWVER, NB, NC, PRG, PFG, PRRG, PIGPV = 16, 17, 19, 21, 22, 23, 24, 26
TRIG, GDC, GPW, HP, NOIB, FG = 37, 83, 84, 86, 99, 97

# Errors (pigpio.h).
BAD_USER_GPIO, BAD_GPIO, BAD_MODE, BAD_LEVEL, BAD_PUD = -2, -3, -4, -5, -6
BAD_PULSEWIDTH, BAD_DUTYCYCLE, BAD_DUTYRANGE, BAD_HANDLE = -7, -8, -21, -25
NOT_PERMITTED = -41
UNKNOWN_COMMAND, NOT_PWM_GPIO, NOT_SERVO_GPIO = -88, -92, -93
NOT_HPWM_GPIO, BAD_HPWM_FREQ, BAD_HPWM_DUTY, BAD_FILTER = -95, -96, -97, -125

INPUT, OUTPUT, ALT0, ALT5 = 0, 1, 4, 2
HW_PWM_ALT = {12: ALT0, 13: ALT0, 18: ALT5, 19: ALT5}
SW_PWM_FREQUENCIES = (8000, 4000, 2000, 1600, 1000, 800, 500, 400, 320, 250, 200, 160, 100,
                      80, 50, 40, 20, 10)
"""What software PWM can do at pigpiod's default 5 us sampling; PFS picks the closest."""
HW_REVISION = 0xC03111  # a Raspberry Pi 4 Model B
PIGPIO_VERSION = 79


@dataclass
class Pin:
    mode: int = INPUT
    pull: int = 0
    driven: int = 0
    """The level the Pi drives (outputs, PWM, servo)."""
    external: int = 0
    """The level the outside world puts on the pin (inputs)."""
    pwm_on: bool = False
    pwm_duty: int = 0
    pwm_range: int = 255
    pwm_frequency: int = 800
    servo: int = 0
    hw_frequency: int = 0
    hw_duty: int = 0
    glitch_us: int = 0

    @property
    def level(self) -> int:
        return self.external if self.mode == INPUT else self.driven


@dataclass
class Stall:
    """Holds the next WRITE to one pin until its client disconnects (or ``release``)."""

    pin: int
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def release(self) -> None:
        self.released.set()


@dataclass
class _Notifier:
    handle: int
    writer: asyncio.StreamWriter
    mask: int = 0
    seq: int = 0


class FakePigpiod(FakeDaemon):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.pins: dict[int, Pin] = {}
        self.writes: list[tuple[int, int]] = []
        """Every WRITE applied, in order: (gpio, level)."""
        self.commands: list[tuple[int, int, int]] = []
        self._notifiers: dict[int, _Notifier] = {}
        self._next_handle = 0
        self._stalls: dict[int, Stall] = {}
        self._refusals: dict[int, int] = {}
        self._start = time.monotonic()

    def reset(self) -> None:
        """Every pin back to a powered-up Pi's default (as after a reboot)."""
        self.pins.clear()

    # --- what tests use -----------------------------------------------------------------

    def pin(self, gpio: int) -> Pin:
        return self.pins.setdefault(gpio, Pin())

    def level(self, gpio: int) -> int:
        return self.pin(gpio).level

    def mode(self, gpio: int) -> int:
        return self.pin(gpio).mode

    def watched(self, gpio: int) -> bool:
        """Whether some client asked (NB) to be told about this GPIO."""
        return any(n.mask & (1 << gpio) for n in self._notifiers.values())

    def inject(self, gpio: int, level: int) -> None:
        """Put a level on a pin from outside, as a button or sensor would."""
        pin = self.pin(gpio)
        before = pin.level
        pin.external = level
        if pin.level != before:
            self._changed(gpio)

    def refuse(self, gpio: int, code: int = NOT_PERMITTED) -> None:
        """Answer every command on this GPIO with an error, as pigpiod does for a GPIO it
        may not touch (``pigpiod -x`` permits mask)."""
        self._refusals[gpio] = code

    def stall_write(self, gpio: int) -> Stall:
        stall = Stall(gpio)
        self._stalls[gpio] = stall
        return stall

    # --- the protocol -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                header = await reader.readexactly(16)
                cmd, p1, p2, p3 = struct.unpack("IIII", header)
                extra = await reader.readexactly(p3) if p3 else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.commands.append((cmd, p1, p2))
            if cmd == NOIB:
                await self._open_notifier(reader, writer, cmd)
                return
            if cmd == WRITE and p1 in self._stalls:
                stall = self._stalls.pop(p1)
                if not await self._hold(stall, reader):
                    return
            result = self._execute(cmd, p1, p2, extra)
            writer.write(struct.pack("IIII", cmd, p1, p2, result & 0xFFFFFFFF))
            await writer.drain()

    async def _hold(self, stall: Stall, reader: asyncio.StreamReader) -> bool:
        """Keep a WRITE unanswered and unapplied; False if the client went away meanwhile."""
        stall.reached.set()
        eof = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(stall.released.wait())
        try:
            await asyncio.wait({eof, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            eof.cancel()
            released.cancel()
        if not stall.released.is_set():
            stall.dropped = True
            return False
        return True

    async def _open_notifier(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             cmd: int) -> None:
        self._next_handle += 1
        handle = self._next_handle
        self._notifiers[handle] = _Notifier(handle, writer)
        writer.write(struct.pack("IIII", cmd, 0, 0, handle))
        try:
            await writer.drain()
            # The client sends only NC here (when it stops); pigpiod then closes the socket.
            while True:
                header = await reader.readexactly(16)
                if struct.unpack("IIII", header)[0] == NC:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._notifiers.pop(handle, None)

    def _bank1(self) -> int:
        bits = 0
        for gpio, pin in self.pins.items():
            if gpio < 32 and pin.level:
                bits |= 1 << gpio
        return bits

    def _tick(self) -> int:
        return int((time.monotonic() - self._start) * 1_000_000) & 0xFFFFFFFF

    def _changed(self, gpio: int) -> None:
        levels = self._bank1()
        for notifier in list(self._notifiers.values()):
            if notifier.mask & (1 << gpio) and not notifier.writer.is_closing():
                notifier.seq = (notifier.seq + 1) & 0xFFFF
                notifier.writer.write(struct.pack("HHII", notifier.seq, 0, self._tick(), levels))

    def _drive(self, gpio: int, level: int) -> None:
        pin = self.pin(gpio)
        before = pin.level
        pin.driven = level
        if pin.level != before:
            self._changed(gpio)

    def _set_mode(self, gpio: int, mode: int) -> None:
        pin = self.pin(gpio)
        before = pin.level
        pin.mode = mode
        if pin.level != before:
            self._changed(gpio)

    def _stop_pulses(self, pin: Pin) -> None:
        pin.pwm_duty = pin.servo = pin.hw_duty = pin.hw_frequency = 0
        pin.pwm_on = False

    def _execute(self, cmd: int, p1: int, p2: int, extra: bytes) -> int:
        user = p1 <= 31
        gpio_ok = p1 <= 53
        if p1 in self._refusals and cmd not in (NB, NC, BR1, TICK, HWVER, PIGPV):
            return self._refusals[p1]
        if cmd in (MODES, MODEG, PUD, READ, WRITE, HP) and not gpio_ok:
            return BAD_GPIO
        if cmd in (PWM, PRS, PFS, SERVO, WDOG, PRG, PFG, PRRG, TRIG, GDC, GPW, FG) and not user:
            return BAD_USER_GPIO
        if cmd == MODES:
            if p2 > 7:
                return BAD_MODE
            self._set_mode(p1, p2)
            return 0
        if cmd == MODEG:
            return self.pin(p1).mode
        if cmd == PUD:
            if p2 > 2:
                return BAD_PUD
            pin = self.pin(p1)
            pin.pull = p2
            if pin.mode == INPUT:
                # Nothing drives the pin from outside in a test unless injected: the pull wins.
                before = pin.level
                pin.external = {0: pin.external, 1: 0, 2: 1}[p2]
                if pin.level != before:
                    self._changed(p1)
            return 0
        if cmd == READ:
            return self.pin(p1).level
        if cmd == WRITE:
            if p2 > 1:
                return BAD_LEVEL
            pin = self.pin(p1)
            self._stop_pulses(pin)
            self.writes.append((p1, p2))
            # pigpio's gpioWrite makes the GPIO an output if it was not one.
            if pin.mode != OUTPUT:
                pin.mode = OUTPUT
            self._drive(p1, p2)
            return 0
        if cmd == PWM:
            pin = self.pin(p1)
            if p2 > pin.pwm_range:
                return BAD_DUTYCYCLE
            self._stop_pulses(pin)
            pin.pwm_duty, pin.pwm_on = p2, True
            pin.mode = OUTPUT
            self._drive(p1, int(p2 > 0))
            return 0
        if cmd == PRS:
            if not 25 <= p2 <= 40000:
                return BAD_DUTYRANGE
            pin = self.pin(p1)
            pin.pwm_range = p2
            return 200_000 // pin.pwm_frequency
        if cmd == PFS:
            pin = self.pin(p1)
            pin.pwm_frequency = min(SW_PWM_FREQUENCIES, key=lambda f: abs(f - p2))
            return pin.pwm_frequency
        if cmd == PRG:
            return self.pin(p1).pwm_range
        if cmd == PFG:
            pin = self.pin(p1)
            return pin.hw_frequency or pin.pwm_frequency
        if cmd == PRRG:
            pin = self.pin(p1)
            return 1_000_000 if pin.hw_frequency else 200_000 // pin.pwm_frequency
        if cmd == SERVO:
            if p2 != 0 and not 500 <= p2 <= 2500:
                return BAD_PULSEWIDTH
            pin = self.pin(p1)
            self._stop_pulses(pin)
            pin.servo = p2
            pin.mode = OUTPUT
            self._drive(p1, int(p2 > 0))
            return 0
        if cmd == HP:
            if p1 not in HW_PWM_ALT:
                return NOT_HPWM_GPIO
            (duty,) = struct.unpack("I", extra[:4]) if len(extra) >= 4 else (0,)
            if p2 != 0 and not 1 <= p2 <= 187_500_000:
                return BAD_HPWM_FREQ
            if duty > 1_000_000:
                return BAD_HPWM_DUTY
            pin = self.pin(p1)
            self._stop_pulses(pin)
            pin.hw_frequency, pin.hw_duty = p2, duty
            pin.mode = HW_PWM_ALT[p1]
            self._drive(p1, int(duty > 0 and p2 > 0))
            return 0
        if cmd == GDC:
            pin = self.pin(p1)
            if pin.hw_frequency:
                return pin.hw_duty
            return pin.pwm_duty if pin.pwm_on else NOT_PWM_GPIO
        if cmd == GPW:
            pin = self.pin(p1)
            return pin.servo if pin.servo else NOT_SERVO_GPIO
        if cmd == FG:
            if p2 > 300_000:
                return BAD_FILTER
            self.pin(p1).glitch_us = p2
            return 0
        if cmd in (WDOG, TRIG):
            return 0
        if cmd == BR1:
            return self._bank1()
        if cmd == TICK:
            return self._tick()
        if cmd == HWVER:
            return HW_REVISION
        if cmd == PIGPV:
            return PIGPIO_VERSION
        if cmd == NB:
            notifier = self._notifiers.get(p1)
            if notifier is None:
                return BAD_HANDLE
            notifier.mask = p2
            return 0
        if cmd == NC:
            notifier = self._notifiers.pop(p1, None)
            if notifier is None:
                return BAD_HANDLE
            notifier.writer.close()
            return 0
        return UNKNOWN_COMMAND
