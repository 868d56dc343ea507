"""GPIO through pigpiod, with the ``pigpio`` client library.

The client is synchronous and never times out, so every call runs in a worker thread under
a deadline; a call that misses it, or a broken socket, drops the connection (the next call
reconnects). Edge callbacks arrive on the client's notification thread and hop to the
event loop with ``call_soon_threadsafe``; debounce runs on the loop (agent.gpio.debounce).

pigpiod has no authentication: keep it listening on localhost (``pigpiod -l``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pigpio

from agent.gpio.backend import BackendError, EdgeCallback
from agent.gpio.debounce import Debouncer
from common.gpio import HARDWARE_PWM_PINS, Mode, Pull

logger = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 5.0
"""Seconds a pigpiod call may take; a local pigpiod answers in well under a millisecond."""
HEALTH_INTERVAL = 2.0
"""Seconds between liveness probes: a dead pigpiod leaves the client's notification thread
spinning on a closed socket, so it must be noticed and the client stopped promptly."""
PWM_RANGE = 1000
"""Software PWM steps: 0.1 % resolution."""
HW_DUTY_SCALE = 10_000
"""Hardware PWM duty is 0-1,000,000; ours is 0-100 %."""

_PULL = {"none": pigpio.PUD_OFF, "up": pigpio.PUD_UP, "down": pigpio.PUD_DOWN}


@dataclass(slots=True)
class _Watch:
    debouncer: Debouncer
    handle: Any = None


class PigpioBackend:
    name = "pigpio"

    def __init__(self, host: str = "127.0.0.1", port: int = 8888, *,
                 timeout: float = CALL_TIMEOUT, health_interval: float = HEALTH_INTERVAL
                 ) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._health_interval = health_interval
        self._pi: Any = None
        self._lock = asyncio.Lock()
        self._watches: dict[int, _Watch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: asyncio.Task[None] | None = None
        self._reconnected: list[Callable[[], None]] = []
        self._opening = False

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        return self._pi is not None

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect if pigpiod is there; if not, say so and keep going (calls retry)."""
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            self._opening = True
            try:
                await self._ensure()
            except BackendError as err:
                logger.warning("%s", err)
            finally:
                self._opening = False
        self._health = asyncio.create_task(self._probe(), name="pigpiod health probe")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        async with self._lock:
            for watch in self._watches.values():
                watch.debouncer.cancel()
            self._watches.clear()
            pi, self._pi = self._pi, None
            if pi is not None:
                await asyncio.to_thread(_stop, pi)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            with contextlib.suppress(BackendError):
                await self._call("ping", lambda pi: pi.get_current_tick())

    # --- the connection -----------------------------------------------------------------

    async def _ensure(self) -> Any:
        """The connected client; connects (and re-arms input callbacks) if needed."""
        if self._pi is not None:
            return self._pi
        try:
            async with asyncio.timeout(self._timeout):
                pi = await asyncio.to_thread(pigpio.pi, self._host, self._port, False)
        except TimeoutError as err:
            raise BackendError(f"pigpiod at {self.address} did not answer") from err
        if not pi.connected:
            raise BackendError(f"pigpiod is not reachable at {self.address}: is it running "
                               "(systemctl start pigpiod)?")
        self._pi = pi
        logger.info("connected to pigpiod at %s", self.address)
        for pin, watch in self._watches.items():
            watch.handle = None
            await self._in_thread(f"callback({pin})", self._arm(pin))
        if not self._opening:
            for callback in self._reconnected:
                callback()
        return pi

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnected.append(callback)

    def _drop(self, reason: str) -> None:
        pi, self._pi = self._pi, None
        if pi is None:
            return
        logger.warning("lost pigpiod at %s (%s); reconnecting", self.address, reason)
        for watch in self._watches.values():
            watch.handle = None
        _abandon(pi)

    async def _in_thread(self, what: str, fn: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.to_thread(fn)
        except pigpio.error as err:
            reason = getattr(err, "value", err)  # pigpio.error's str() is a repr
            raise BackendError(f"pigpiod refused {what}: {reason}") from err
        except TimeoutError as err:
            self._drop(f"{what} took over {self._timeout:g}s")
            raise BackendError(f"pigpiod at {self.address} did not answer {what} within "
                               f"{self._timeout:g}s") from err
        except (OSError, struct.error, AttributeError) as err:
            # A closed socket shows as a short read (struct.error) or a None socket.
            self._drop(f"{what} failed: {type(err).__name__}")
            raise BackendError(f"lost the connection to pigpiod at {self.address} "
                               f"during {what}") from err

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        async with self._lock:
            pi = await self._ensure()
            return await self._in_thread(what, lambda: fn(pi))

    # --- GpioBackend ----------------------------------------------------------------------

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

    async def watch(self, pin: int, debounce_ms: int, callback: EdgeCallback) -> None:
        async with self._lock:
            await self._ensure()
            old = self._watches.pop(pin, None)
            if old is not None:
                await self._disarm(pin, old)
            self._watches[pin] = _Watch(Debouncer(pin, debounce_ms, callback))
            await self._in_thread(f"callback({pin})", self._arm(pin))

    async def unwatch(self, pin: int) -> None:
        async with self._lock:
            watch = self._watches.pop(pin, None)
            if watch is not None:
                await self._disarm(pin, watch)

    def _arm(self, pin: int) -> Callable[[], None]:
        pi, watch = self._pi, self._watches[pin]

        def run() -> None:
            watch.handle = pi.callback(pin, pigpio.EITHER_EDGE, self._from_thread)

        return run

    async def _disarm(self, pin: int, watch: _Watch) -> None:
        watch.debouncer.cancel()
        handle, watch.handle = watch.handle, None
        if handle is not None and self._pi is not None:
            await self._in_thread(f"cancel callback({pin})", handle.cancel)

    # --- edges ----------------------------------------------------------------------------

    def _from_thread(self, pin: int, level: int, _tick: int) -> None:
        """Runs on pigpio's notification thread."""
        if level not in (0, 1) or self._loop is None:
            return  # 2 is a watchdog timeout, not a level
        with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
            self._loop.call_soon_threadsafe(self._edge, pin, level)

    def _edge(self, pin: int, level: int) -> None:
        watch = self._watches.get(pin)
        if watch is not None:
            watch.debouncer.edge(level)


def _stop(pi: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        pi.stop()


def _abandon(pi: Any) -> None:
    """Let go of a client whose pigpiod died or stalled, leaving no thread behind.

    Shutting the command socket down wakes a thread blocked on it; ``stop`` tells the
    notification thread to end (a dead daemon would otherwise leave it spinning on a closed
    socket) and shutting its socket down wakes it to notice.
    """
    command = getattr(getattr(pi, "sl", None), "s", None)
    notify = getattr(getattr(getattr(pi, "_notify", None), "sl", None), "s", None)
    _shutdown(command)
    with contextlib.suppress(Exception):
        pi.stop()
    _shutdown(notify)
    if isinstance(command, socket.socket):
        command.close()


def _shutdown(sock: object) -> None:
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
