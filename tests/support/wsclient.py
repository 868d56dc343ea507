"""A WebSocket client that records every message and lets a test wait for one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.waiting import wait_until

Message = dict[str, Any]


class WsRecorder:
    def __init__(self, session: aiohttp.ClientSession, url: str,
                 headers: dict[str, str] | None = None) -> None:
        self.session = session
        self.url = url
        self.headers = headers or {}
        self.messages: list[Message] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def __aenter__(self) -> WsRecorder:
        self.ws = await self.session.ws_connect(self.url, headers=self.headers, heartbeat=None)
        self._task = asyncio.create_task(self._read(), name="ws recorder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        self.close_code = self.ws.close_code
        # The close frame's reason comes with the CLOSE message only.
        self.close_reason = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE else None
        self.closed.set()

    async def send(self, message: Message) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    def of_type(self, type_: str) -> list[Message]:
        return [m for m in self.messages if m.get("type") == type_]

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10.0,
                       what: str = "a message") -> Message:
        def found() -> Message | None:
            return next((m for m in self.messages if predicate(m)), None)

        result: Message = await wait_until(found, timeout, what=what)
        return result
