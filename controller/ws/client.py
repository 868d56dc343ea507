"""One /ws client as the server sees it: the state machine of its delivery and of its close.

    catching up --go_live--> live <--> slow (coalescing)
         \\                   |          /
          +-------------- closing ------+   (our close frame sent; waiting for the peer's)
                              |
                            gone            (the socket is closed)

Only this class writes these fields; the hub, the connection and the ops call its methods.
Every byte queued to the client goes through here, so every byte counts against its limits:
past the hard limit the client is closed with 4008, whatever the bytes were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

from common import events
from controller.subscription import Subscription
from controller.ws import messages
from controller.ws.codes import CloseCode
from controller.ws.frames import PING_FRAME, close_frame, text_frame

if TYPE_CHECKING:
    from controller.ws.hub import Hub, Outgoing

logger = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS: Final = 2.0
"""How long a closing client has to answer our close frame before its socket is cut."""
ROOM_TIMEOUT: Final = 30.0
"""Seconds a catch-up waits for the client to read before it is closed as slow."""
ROOM_POLL: Final = 0.01


class Transport(Protocol):
    """What a client needs of its socket (asyncio.Transport fits; tests may pass their own)."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Client:
    __slots__ = ("_abort", "_snapshot_queued", "backlog", "backlog_bytes", "buffered",
                 "buffering", "closed", "closing", "cut", "dropped", "hub", "last_id",
                 "last_seen", "name", "slow", "slow_since", "subscription", "transport")

    def __init__(self, hub: Hub, transport: Transport, subscription: Subscription,
                 name: str = "") -> None:
        self.hub = hub
        self.transport = transport
        self.subscription = subscription
        self.name = name
        self.buffering = False
        """Catching up: live events wait in ``buffered`` until ``go_live``."""
        self.buffered: list[Outgoing] = []
        self.slow = False
        """Its socket is backed up: state-like events coalesce in ``backlog``."""
        self.backlog: dict[str, Outgoing] = {}
        self.backlog_bytes = 0
        self.dropped = 0
        self.closed = False
        """Nothing more is sent: our close frame is out, or the socket is gone."""
        self.closing = False
        """Our close frame is out and the peer's is awaited."""
        self.last_id: str | None = None
        self.last_seen = 0.0
        """Loop time the peer last sent anything (a pong counts): the heartbeat's yardstick."""
        self.slow_since = 0.0
        self.cut: tuple[int, int] | None = None
        self._abort: asyncio.TimerHandle | None = None
        self._snapshot_queued = False

    # --- what the peer did -------------------------------------------------------------

    def heard(self, now: float) -> None:
        self.last_seen = now

    # --- events --------------------------------------------------------------------------

    def deliver(self, data: bytes, items: Sequence[Outgoing]) -> None:
        """A batch from the feed (``data`` is the frames of ``items``, already joined)."""
        if self.closed:
            return
        if self.buffering:
            self.buffered.extend(items)
            return
        if self.slow:
            self._coalesce(items)
            return
        queued = self.transport.get_write_buffer_size()
        if queued > self.hub.soft_limit:
            self._coalesce(items)
            return
        if self._write(data, queued):
            self.last_id = items[-1].id

    def send_many(self, items: Sequence[Outgoing]) -> None:
        if items and self._write(b"".join(item.frame for item in items)):
            self.last_id = items[-1].id

    def _coalesce(self, items: Sequence[Outgoing]) -> None:
        if not self.slow:
            self.slow = True
            self.slow_since = asyncio.get_running_loop().time()
            self.hub.slow_clients.add(self)
        for item in items:
            key = item.coalesce_key
            replaced = self.backlog.get(key)
            if replaced is not None:
                self.dropped += 1
                self.backlog_bytes -= len(replaced.frame)
            self.backlog[key] = item
            self.backlog_bytes += len(item.frame)
        if (len(self.backlog) > self.hub.max_backlog or self.backlog_bytes
                + self.transport.get_write_buffer_size() > self.hub.hard_limit):
            self.kick_slow()

    def flush_backlog(self) -> None:
        """Its socket has room again: the coalesced backlog goes out."""
        if not self.backlog or self.closed:
            self.slow = bool(self.backlog) and not self.closed
            return
        items = list(self.backlog.values())
        self.backlog.clear()
        self.backlog_bytes = 0
        if self.dropped:
            self.send(messages.coalesced(self.dropped))
            self.dropped = 0
        self.send_many(items)
        self.slow = False

    def behind_since(self) -> float | None:
        return self.slow_since if self.slow else None

    # --- catching up -------------------------------------------------------------------

    def begin_catch_up(self) -> None:
        """A replay or snapshot starts: live events wait until ``go_live``."""
        if not self.buffering:
            self.buffering = True
            self.buffered = []

    def go_live(self, after: str | None) -> None:
        """End buffering (replay or snapshot done at ``after``): send what arrived meanwhile.

        The replay or snapshot may have read the stream further than the feed has: then
        this client keeps buffering until the feed passes ``after``, so an event the client
        already has is never sent again (Hub.advance releases it)."""
        self.cut = events.id_key(after) if after else None
        if self.cut is not None and self.hub.position < self.cut:
            self.hub.waiting.add(self)
            return
        self.release()

    def release(self) -> None:
        cut = self.cut
        items = [i for i in self.buffered if cut is None or events.id_key(i.id) > cut]
        self.buffered = []
        self.buffering = False
        self.cut = None
        self.send_many(items)

    def resubscribe(self, subscription: Subscription) -> None:
        self.hub.remove(self)
        self.subscription = subscription
        self.hub.add(self)

    def resync(self, reason: str) -> None:
        """What it was sent may be gone from the store: it should re-read state."""
        self.send(messages.resync(self.last_id or "0-0", reason))

    def snapshot_queued(self) -> bool:
        """Is a snapshot sent earlier possibly still in our write buffer?"""
        if self._snapshot_queued and not self.transport.get_write_buffer_size():
            self._snapshot_queued = False
        return self._snapshot_queued

    def snapshot_sent(self) -> None:
        self._snapshot_queued = True

    def has_room(self) -> bool:
        return self.transport.get_write_buffer_size() <= self.hub.soft_limit

    async def wait_for_room(self) -> None:
        """Until the socket drains below the soft limit; a client that stops reading for
        ROOM_TIMEOUT is closed as slow."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOM_TIMEOUT
        while not self.has_room() and not self.closed:
            if loop.time() > deadline:
                self.kick_slow()
                return
            await asyncio.sleep(ROOM_POLL)

    # --- our own messages ----------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """A server message of its own (ack, error, pong, snapshot part): framed, in order."""
        self._write(text_frame(payload))

    def send_raw(self, data: bytes) -> None:
        """A frame built elsewhere (a pong)."""
        self._write(data)

    def ping(self) -> None:
        self._write(PING_FRAME)

    def _write(self, data: bytes, queued: int | None = None) -> bool:
        """Queue ``data`` unless that takes the client past its hard limit (then it is
        closed as slow). False if nothing was queued. ``queued``: the write buffer's size
        when the caller has just read it (the fan-out reads it once per delivery)."""
        if self.closed:
            return False
        if queued is None:
            queued = self.transport.get_write_buffer_size()
        if queued + len(data) > self.hub.hard_limit:
            self.kick_slow()
            return False
        try:
            self.transport.write(data)
        except RuntimeError:  # the socket closed under us; connection_lost will follow
            self.closed = True
            return False
        return True

    # --- closing -------------------------------------------------------------------------

    def kick_slow(self) -> None:
        self.kick(CloseCode.SLOW_CONSUMER,
                  f"slow consumer; resume with since={self.last_id or ''}")

    def kick(self, code: CloseCode, reason: str) -> None:
        """Start the close handshake (RFC 6455 7.1.2): our close frame goes out, nothing more
        is sent, and the socket closes when the peer answers, or after CLOSE_GRACE_SECONDS.
        Reading goes on meanwhile, so the peer's unread bytes never make the kernel reset
        the connection before our close frame arrives."""
        if self.closed:
            return
        self.closed = True
        self.closing = True
        logger.info("closing /ws client %s: %s (%d)", self.name or "?", reason, code)
        self.hub.kicked += 1
        with contextlib.suppress(Exception):  # the socket may be gone already; abort below
            self.transport.write(close_frame(code, reason))
            self.transport.resume_reading()
        self._abort_later()

    def answer_close(self, code: int | None, reason: str = "") -> None:
        """The peer's close frame arrived: answer it (unless we started) with ``code`` (its
        own, echoed, or ours if its frame was bad) and close the socket; the server closes
        TCP first (RFC 6455 7.1.1)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.write(close_frame(code, reason))
        self.closing = False
        self.transport.close()  # once what is queued is written: if it never is, abort
        self._abort_later()

    def drop(self, reason: str) -> None:
        """Gone without a word (missed pongs): cut the socket."""
        logger.info("/ws client %s %s; dropping it", self.name or "?", reason)
        self.closed = True
        self.transport.abort()

    def lost(self) -> None:
        """The socket is closed."""
        self.closed = True
        self.closing = False
        self.cancel_timers()

    def _abort_later(self) -> None:
        if self._abort is None:
            self._abort = asyncio.get_running_loop().call_later(
                CLOSE_GRACE_SECONDS, self.transport.abort)

    def cancel_timers(self) -> None:
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None

