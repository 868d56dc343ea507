"""The socket of one /ws client after the upgrade: bytes in, frames out of them, control
frames answered, ops queued and run in order, reading paused while writes back up, and a
rate limit on what the client sends.

aiohttp hands the socket over after the handshake (``endpoint.detach``); from then on this
protocol is all there is between the socket and the client's state (``client.Client``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from controller.ws import messages
from controller.ws.client import Client
from controller.ws.codes import CloseCode, ErrorCode
from controller.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    Message,
    frame,
    parse_close,
)
from controller.ws.service import WebSockets

logger = logging.getLogger(__name__)

MAX_QUEUED_OPS: Final = 8
"""Ops of one client waiting to run before its socket is no longer read."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply decided on arrival (an error) that waits its turn behind earlier ops."""

    payload: bytes


class Connection(asyncio.Protocol):
    __slots__ = ("_allowance", "_inbox", "_limited", "_parser", "_reading_paused", "_stamp",
                 "_then_close", "_worker", "_writes_backed_up", "client", "credential",
                 "service")

    def __init__(self, service: WebSockets, client: Client) -> None:
        self.service = service
        self.client = client
        self.credential: str | None = None
        """What the client authenticated with, once admitted (``access``)."""
        self._parser = FrameParser(service.policy.max_message)
        self._inbox: list[bytes | Reply] | None = None
        """Ops to run, and replies to send after them, in the order the client sent them."""
        self._worker: asyncio.Task[Any] | None = None
        self._allowance = service.policy.burst
        self._stamp = 0.0
        self._limited = False
        self._writes_backed_up = False
        self._reading_paused = False
        self._then_close: Callable[[], None] | None = None
        """The close to make once the ops the client sent before it have been answered."""

    # --- asyncio.Protocol ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client.closed:
            self._drain_after_close(data)
            return
        if self._then_close is not None:
            return  # the client is done (it closed, or broke the protocol): nothing more
        now = asyncio.get_running_loop().time()
        client.heard(now)
        parser = self._parser
        for message in parser.feed(data):
            if client.closed or self._then_close is not None:
                break
            if self._spend(now):
                self._handle(message)
        else:
            if parser.failure is not None:
                self._close_when_answered(partial(client.kick, parser.failure.code,
                                                  parser.failure.reason))
                # What follows cannot be framed reliably; the peer's close, if it answers
                # ours, starts a segment of its own: read that with a fresh parser.
                self._parser = FrameParser(self.service.policy.max_message)
        self._wake()

    def _queue(self, item: bytes | Reply) -> None:
        if self._inbox is None:
            self._inbox = []
        self._inbox.append(item)
        self._pace_reading()

    def _reply(self, payload: bytes) -> None:
        """A reply to what the client sent, after the replies to what it sent before."""
        if self._inbox or self._worker is not None:
            self._queue(Reply(payload))
        else:
            self.client.send(payload)

    def _close_when_answered(self, close: Callable[[], None]) -> None:
        """Close now, or once the ops that came before the close (or the break) are answered,
        as RFC 6455 orders them."""
        if self._inbox or self._worker is not None:
            self._then_close = close
        else:
            close()

    def _answered(self) -> None:
        """No op left to run: a close that waited for them goes out now."""
        close, self._then_close = self._then_close, None
        if close is not None and not self.client.closed:
            close()

    def _handle(self, message: Message) -> None:
        client = self.client
        if message.opcode == OP_TEXT:
            self._queue(message.payload)
        elif message.opcode == OP_PING:
            client.send_raw(frame(OP_PONG, message.payload))
        elif message.opcode == OP_BINARY:
            self._reply(messages.error(None, ErrorCode.BAD_MESSAGE,
                                       "binary messages are not accepted; send JSON text"))
        elif message.opcode == OP_CLOSE:
            try:
                code, _ = parse_close(message.payload)
            except FrameError as err:
                self._close_when_answered(partial(client.answer_close, err.code, err.reason))
                return
            self._close_when_answered(partial(client.answer_close, code))
        # OP_PONG: an answer to our ping; hearing it was the point.

    def _drain_after_close(self, data: bytes) -> None:
        """Our close frame is out: read on, discarding, until the peer's close arrives."""
        if not self.client.closing:
            return
        received = self._parser.feed(data)
        if self._parser.failure is not None or any(m.opcode == OP_CLOSE for m in received):
            self.client.answer_close(None)

    def _spend(self, now: float) -> bool:
        """One message against the client's allowance (a token bucket). Past the allowance
        the message is dropped and the client told once; far past it, closed."""
        policy = self.service.policy
        allowance = min(policy.burst, self._allowance + (now - self._stamp) * policy.rate) - 1
        self._allowance, self._stamp = allowance, now
        if allowance >= 0:
            self._limited = False
            return True
        if allowance < -policy.burst:
            self.client.kick(CloseCode.TOO_MANY, f"more than {policy.rate:g} messages a "
                             "second; reconnect later")
        elif not self._limited:
            self._limited = True
            self._reply(messages.error(None, ErrorCode.RATE_LIMITED, (
                f"more than {policy.rate:g} messages a second: messages are being dropped; "
                "slow down or the connection is closed")))
        return False

    def eof_received(self) -> bool:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        client.lost()
        self.service.hub.remove(client)
        if self.credential is not None:
            self.service.access.release(client, self.credential)
        worker, self._worker = self._worker, None
        if worker is not None and worker is not asyncio.current_task():
            worker.cancel()

    def pause_writing(self) -> None:
        self._writes_backed_up = True
        self._pace_reading()

    def resume_writing(self) -> None:
        self._writes_backed_up = False
        self._pace_reading()

    def _pace_reading(self) -> None:
        """Read from the client only while it reads from us and its ops keep up: what it
        sends meanwhile waits in the kernel (and then in its own), not in our memory."""
        pause = not self.client.closing and (
            self._writes_backed_up or len(self._inbox or ()) >= MAX_QUEUED_OPS)
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self.client.transport.pause_reading()
            else:
                self.client.transport.resume_reading()

    # --- ops -----------------------------------------------------------------------------

    def hold_ops(self) -> None:
        """Ops wait in the inbox until ``start`` has run the catch-up on connect."""
        self._worker = asyncio.current_task()

    async def start(self, catch_up: Awaitable[None]) -> None:
        """Run the catch-up on connect on the caller's task; ops wait in the inbox."""
        self._worker = asyncio.current_task()
        try:
            await catch_up
        except Exception:
            logger.exception("/ws catch-up of %s failed", self.client.name)
            self.client.kick(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._worker = None
        self._wake()
        if self._worker is None:
            self._answered()

    def _wake(self) -> None:
        if self._inbox and self._worker is None and not self.client.closed:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"/ws ops of {self.client.name}")

    async def _work(self) -> None:
        """Runs the queued ops one by one; owned by this connection, cancelled with it."""
        client = self.client
        try:
            while self._inbox and not client.closed:
                item = self._inbox.pop(0)
                self._pace_reading()
                if isinstance(item, Reply):
                    client.send(item.payload)
                else:
                    await self.service.ops.run(client, item)
        except Exception:
            logger.exception("/ws op of %s failed", client.name)
            client.kick(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._worker = None
            if not self._inbox:
                self._inbox = None
                self._answered()
