"""What the pigpio and rgpio backends share: a synchronous client of a GPIO daemon, used
from asyncio without ever blocking the loop or hanging.

Both client libraries block on sockets and never time out, so every call runs in a worker
thread under a deadline, one at a time; a call that misses it, or a broken socket, drops
the client (the next call reconnects, and the agent re-applies its pins). A probe notices
a dead daemon between calls, because both clients' notification threads spin on a closed
socket until stopped. Edge callbacks arrive on the client's notification thread and hop
to the event loop with ``call_soon_threadsafe``; debounce runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.gpio.backend import BackendError, EdgeCallback
from agent.gpio.debounce import Debouncer
from common.tasks import stop

logger = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 5.0
"""Seconds a daemon call may take; a local daemon answers in well under a millisecond."""
HEALTH_INTERVAL = 2.0
"""Seconds between liveness probes (see the module docstring)."""


@dataclass(slots=True)
class Watch:
    debouncer: Debouncer
    handle: Any = None
    """The client's callback object, while armed."""


class DaemonBackend:
    """Subclasses name the daemon and implement the hooks at the bottom."""

    name = "daemon"
    daemon = "the GPIO daemon"
    library_error: type[Exception] = Exception
    """The client library's exception for a refused call."""

    def __init__(self, host: str, port: int, *, timeout: float = CALL_TIMEOUT,
                 health_interval: float = HEALTH_INTERVAL) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._health_interval = health_interval
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._watches: dict[int, Watch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: asyncio.Task[None] | None = None
        self._reconnected: list[Callable[[], None]] = []
        self._opening = False
        self._busy = 0
        """Worker threads inside a client call (one stays there while the daemon stalls)."""
        self._busy_lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect if the daemon is there; if not, say so and keep going (calls retry)."""
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            self._opening = True
            try:
                await self._ensure()
            except BackendError as err:
                logger.warning("%s", err)
            finally:
                self._opening = False
        self._health = asyncio.create_task(self._probe(), name=f"{self.name} health probe")

    async def close(self) -> None:
        if self._health is not None:
            await stop(self._health)
            self._health = None
        async with self._lock:
            for watch in self._watches.values():
                watch.debouncer.cancel()
            self._watches.clear()
            client, self._client = self._client, None
            if client is None:
                return
            if self._busy:
                # A thread is still blocked on the daemon: wake it by closing the sockets,
                # or the process could not exit (the executor waits for its threads).
                self._abandon(client)
                return
            try:
                async with asyncio.timeout(self._timeout):
                    await self._thread(lambda: self._stop(client))
            except Exception:  # noqa: BLE001 - whatever went wrong, let go of it all
                self._abandon(client)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnected.append(callback)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            with contextlib.suppress(BackendError):
                await self._call("ping", self._ping)

    # --- the connection -----------------------------------------------------------------

    async def _ensure(self) -> Any:
        """The connected client; connects (and re-arms input callbacks) if needed."""
        if self._client is not None:
            return self._client
        try:
            async with asyncio.timeout(self._timeout):
                client = await self._thread(self._connect)
        except TimeoutError as err:
            raise BackendError(f"{self.daemon} at {self.address} did not answer") from err
        except self.library_error as err:
            reason = getattr(err, "value", err)
            raise BackendError(f"{self.daemon} at {self.address} refused: {reason}") from err
        if client is None:
            raise BackendError(f"{self.daemon} is not reachable at {self.address}: is it "
                               "running?")
        self._client = client
        logger.info("connected to %s at %s", self.daemon, self.address)
        for pin, watch in self._watches.items():
            watch.handle = None
            await self._in_thread(f"callback({pin})", self._armer(pin, watch))
        if not self._opening:
            for callback in self._reconnected:
                callback()
        return client

    def _drop(self, reason: str) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        logger.warning("lost %s at %s (%s); reconnecting", self.daemon, self.address, reason)
        for watch in self._watches.values():
            watch.handle = None
        self._abandon(client)

    async def _in_thread(self, what: str, fn: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._thread(fn)
        except self.library_error as err:
            reason = getattr(err, "value", err)  # the clients' str() is a repr
            raise BackendError(f"{self.daemon} refused {what}: {reason}") from err
        except TimeoutError as err:
            self._drop(f"{what} took over {self._timeout:g}s")
            raise BackendError(f"{self.daemon} at {self.address} did not answer {what} "
                               f"within {self._timeout:g}s") from err
        except (OSError, struct.error, AttributeError) as err:
            # A closed socket shows as a short read (struct.error) or a None socket.
            self._drop(f"{what} failed: {type(err).__name__}")
            raise BackendError(f"lost the connection to {self.daemon} at {self.address} "
                               f"during {what}") from err

    def _thread(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        def run() -> T:
            with self._busy_lock:
                self._busy += 1
            try:
                return fn()
            finally:
                with self._busy_lock:
                    self._busy -= 1

        return asyncio.get_running_loop().run_in_executor(None, run)

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        async with self._lock:
            client = await self._ensure()
            return await self._in_thread(what, lambda: fn(client))

    # --- inputs -------------------------------------------------------------------------

    async def watch(self, pin: int, debounce_ms: int, callback: EdgeCallback) -> None:
        async with self._lock:
            await self._ensure()
            old = self._watches.pop(pin, None)
            if old is not None:
                await self._unarm(pin, old)
            watch = Watch(Debouncer(pin, debounce_ms, callback))
            self._watches[pin] = watch
            await self._in_thread(f"callback({pin})", self._armer(pin, watch))

    async def unwatch(self, pin: int) -> None:
        async with self._lock:
            watch = self._watches.pop(pin, None)
            if watch is not None:
                await self._unarm(pin, watch)

    def _armer(self, pin: int, watch: Watch) -> Callable[[], None]:
        client = self._client

        def run() -> None:
            watch.handle = self._arm(client, pin)

        return run

    async def _unarm(self, pin: int, watch: Watch) -> None:
        watch.debouncer.cancel()
        handle, watch.handle = watch.handle, None
        if handle is not None and self._client is not None:
            client = self._client
            await self._in_thread(f"cancel callback({pin})",
                                  lambda: self._disarm(client, pin, handle))

    def _from_thread(self, pin: int, level: int) -> None:
        """Runs on the client's notification thread."""
        if level not in (0, 1) or self._loop is None:
            return  # e.g. a watchdog timeout, not a level
        with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
            self._loop.call_soon_threadsafe(self._edge, pin, level)

    def _edge(self, pin: int, level: int) -> None:
        watch = self._watches.get(pin)
        if watch is not None:
            watch.debouncer.edge(level)

    # --- hooks (run in a worker thread) ------------------------------------------------

    def _connect(self) -> Any:
        """A connected client, or None if the daemon is not there."""
        raise NotImplementedError

    def _stop(self, client: Any) -> None:
        """Close a healthy client cleanly."""
        raise NotImplementedError

    def _ping(self, client: Any) -> object:
        raise NotImplementedError

    def _arm(self, client: Any, pin: int) -> Any:
        """Start edge callbacks for a pin (calling ``_from_thread``); returns a handle."""
        raise NotImplementedError

    def _disarm(self, client: Any, pin: int, handle: Any) -> None:
        raise NotImplementedError

    def _abandon(self, client: Any) -> None:
        """Let go of a client whose daemon died or stalled, leaving no thread behind."""
        raise NotImplementedError


def shutdown(sock: object) -> None:
    """Wake a thread blocked on a socket that will never answer."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
