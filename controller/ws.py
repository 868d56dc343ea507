"""The /ws endpoint: upgrade, subscription, resume, snapshot, client ops.

aiohttp authenticates and routes the upgrade request; then the socket is ours (``detach``):
``Connection`` reads client frames (``wsframes``) and runs ops, the hub writes events
straight to the socket. docs/websocket.md is the user-facing description of this protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Final, cast
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from common import events
from common.errors import ForbiddenError, ValidationError
from common.keys import EVENT_FIELD
from controller import appkeys
from controller.auth import principal_of
from controller.feed import outgoing
from controller.hub import Client, Outgoing
from controller.subscription import Subscription
from controller.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    close_frame,
    frame,
    handshake_response,
)

logger = logging.getLogger(__name__)

# Close codes (docs/websocket.md).
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_GOING_AWAY: Final = 1001

# ws.error codes (docs/websocket.md).
ERR_BAD_MESSAGE: Final = "bad_message"
ERR_UNKNOWN_OP: Final = "unknown_op"
ERR_INVALID: Final = "invalid_subscription"
ERR_BAD_SINCE: Final = "bad_since"

QUERY_PARAMS: Final = frozenset({"types", "node", "cluster", "resource", "since", "snapshot"})
REPLAY_PAGE: Final = 500
REPLAY_MAX: Final = 50_000
"""More missed events than this and the client is told to re-read state (ws.resync)."""

_json: Final = msgspec.json.Encoder()


class Op(msgspec.Struct, kw_only=True):
    op: str
    ref: int | str | None = None
    types: str | list[str] | None = None
    node: str | list[str] | None = None
    cluster: str | list[str] | None = None
    resource: str | list[str] | None = None
    since: str | None = None
    snapshot: bool = False


_op_decoder: Final = msgspec.json.Decoder(Op)


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    if origin in allowed:
        return True
    return urlsplit(origin).netloc == host


def parse_since(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        ms, seq = events.id_key(value)
    except ValueError:
        raise ValidationError("since", f"{value!r} is not an event id (like 1736937015123-0)"
                              ) from None
    if ms < 0 or seq < 0:
        raise ValidationError("since", f"{value!r} is not an event id")
    return f"{ms}-{seq}"


def parse_flag(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ValidationError(name, "must be 1/true or 0/false")


def _bad_upgrade(request: web.Request) -> str | None:
    headers = request.headers
    if "websocket" not in headers.get("Upgrade", "").lower():
        return "this endpoint speaks WebSocket only (Upgrade: websocket)"
    if "upgrade" not in headers.get("Connection", "").lower():
        return "Connection: Upgrade is required"
    if headers.get("Sec-WebSocket-Version") != "13":
        return "Sec-WebSocket-Version 13 is required"
    if not headers.get("Sec-WebSocket-Key"):
        return "Sec-WebSocket-Key is required"
    return None


class Detached(web.StreamResponse):
    """What the handler returns once the connection is ours: aiohttp writes nothing more."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def detach(request: web.Request, protocol: asyncio.Protocol) -> asyncio.Transport:
    """Take the socket over from aiohttp after the upgrade.

    aiohttp would keep its HTTP machinery (request, parser, handler task: about 12 KB) alive
    for the whole life of a WebSocket. The /ws protocol needs none of it, so the socket's
    protocol is switched to ours and aiohttp is told the connection is gone, without closing
    it. With 10,000 dashboards that is over 100 MB saved (bench/bench_fanout.py, scenario 4).
    """
    # uvloop's transports are not asyncio.Transport subclasses, but have its whole interface.
    transport = cast(asyncio.Transport, request.transport)
    handler = request.protocol
    transport.set_protocol(protocol)
    handler.transport = None  # so aiohttp can never close the socket it no longer owns
    handler.connection_lost(None)
    return transport


async def handle(request: web.Request) -> web.StreamResponse:
    settings = request.app[appkeys.SETTINGS]
    origin = request.headers.get("Origin")
    if origin and not origin_allowed(origin, request.host, settings.allowed_origins):
        raise ForbiddenError(f"Origin {origin} is not allowed on /ws")
    problem = _bad_upgrade(request)
    if problem is not None:
        raise web.HTTPBadRequest(reason="Bad WebSocket upgrade", text=problem)
    principal = principal_of(request)
    query = request.query
    refusal: str | None = None
    subscription = Subscription.parse()
    since: str | None = None
    snapshot = False
    try:
        unknown = set(query) - QUERY_PARAMS
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown query parameter")
        subscription = Subscription.parse(types=query.get("types"), node=query.get("node"),
                                          cluster=query.get("cluster"),
                                          resource=query.get("resource"))
        since = parse_since(query.get("since") or request.headers.get("Last-Event-ID"))
        snapshot = parse_flag(query.get("snapshot"), "snapshot")
    except ValidationError as err:
        refusal = f"{err.field}: {err.reason}"
    assert request.transport is not None
    request.transport.write(handshake_response(request.headers["Sec-WebSocket-Key"]))
    connection = Connection(request.app, principal.name, settings.ws_max_message)
    transport = detach(request, connection)
    if refusal is not None:
        # After the upgrade, so a browser can read the code and the reason.
        transport.write(close_frame(CLOSE_BAD_REQUEST, refusal))
        transport.close()
        return Detached()
    connection.attach(Client(request.app[appkeys.HUB], transport, subscription,
                             name=principal.name))
    await connection.start(since, snapshot)
    return Detached()


class Connection(asyncio.Protocol):
    """One /ws client after the upgrade: reads its frames, runs its ops in order, and
    leaves its events to the hub."""

    __slots__ = ("_inbox", "_parser", "_worker", "app", "client", "hub", "name", "store")

    def __init__(self, app: web.Application, name: str, max_message: int) -> None:
        self.app = app
        self.hub = app[appkeys.HUB]
        self.store = app[appkeys.STORE]
        self.name = name
        self.client: Client | None = None
        self._parser = FrameParser(max_message=max_message)
        self._inbox: deque[str] = deque()
        self._worker: asyncio.Task[Any] | None = None

    def attach(self, client: Client) -> None:
        self.client = client
        client.last_seen = asyncio.get_running_loop().time()
        client.buffering = True
        self.hub.add(client)

    async def start(self, since: str | None, snapshot: bool) -> None:
        """The catch-up on connect, on aiohttp's handler task; ops wait in the inbox."""
        self._worker = asyncio.current_task()
        try:
            await self.catch_up(since, snapshot)
        finally:
            self._worker = None
        self._wake()

    # --- asyncio.Protocol ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or client.closed:
            return
        client.last_seen = asyncio.get_running_loop().time()
        try:
            messages = self._parser.feed(data)
        except FrameError as err:
            client.kick(err.code, err.reason)
            return
        for message in messages:
            if message.opcode == OP_TEXT:
                self._inbox.append(message.payload.decode(errors="replace"))
            elif message.opcode == OP_BINARY:
                self.error(None, ERR_BAD_MESSAGE, "binary frames are not accepted; send JSON")
            elif message.opcode == OP_PING:
                client.send_raw(frame(OP_PONG, message.payload))
            elif message.opcode == OP_CLOSE:
                client.send_raw(close_frame(1000))
                client.closed = True
                client.transport.close()
                return
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.closed = True
            self.hub.remove(self.client)
        worker, self._worker = self._worker, None
        if worker is not None and worker is not asyncio.current_task():
            worker.cancel()

    def pause_writing(self) -> None:
        """The hub watches each socket's buffer itself."""

    def resume_writing(self) -> None:
        """See pause_writing."""

    # --- ops ---------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._inbox and self._worker is None and self.client and not self.client.closed:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"/ws ops of {self.name}")

    async def _work(self) -> None:
        """Runs the queued ops one by one; owned by this connection, cancelled with it."""
        try:
            while self._inbox and self.client is not None and not self.client.closed:
                await self.on_message(self._inbox.popleft())
        except Exception:
            logger.exception("/ws op of %s failed", self.name)
            if self.client is not None:
                self.client.kick(1011, "internal error")
        finally:
            self._worker = None

    def send(self, message: dict[str, Any]) -> None:
        assert self.client is not None
        self.client.send(_json.encode(message))

    def error(self, ref: object, code: str, message: str) -> None:
        self.send({"type": "ws.error", "ref": ref, "code": code, "message": message})

    async def on_message(self, data: str) -> None:
        try:
            op = _op_decoder.decode(data)
        except msgspec.DecodeError as err:
            self.error(None, ERR_BAD_MESSAGE, f"not a valid op message: {err}")
            return
        if op.op == "ping":
            self.send({"type": "ws.pong", "ref": op.ref})
        elif op.op == "subscribe":
            try:
                subscription = Subscription.parse(types=op.types, node=op.node,
                                                  cluster=op.cluster, resource=op.resource)
                since = parse_since(op.since)
            except ValidationError as err:
                code = ERR_BAD_SINCE if err.field == "since" else ERR_INVALID
                self.error(op.ref, code, f"{err.field}: {err.reason}")
                return
            assert self.client is not None
            self.client.buffering = True
            self.client.buffered = []
            self.hub.resubscribe(self.client, subscription)
            self.send({"type": "ws.ack", "ref": op.ref, "subscription": subscription.describe()})
            await self.catch_up(since, op.snapshot)
        else:
            self.error(op.ref, ERR_UNKNOWN_OP, f"unknown op {op.op!r}: use subscribe or ping")

    async def catch_up(self, since: str | None, snapshot: bool) -> None:
        """Replay or snapshot while live events buffer, then go live from the cut."""
        assert self.client is not None
        cut: str | None = None
        if snapshot:
            cut = await self.send_snapshot()
        elif since is not None:
            cut = await self.replay(since)
        self.client.go_live(cut)

    async def replay(self, since: str) -> str | None:
        assert self.client is not None
        log = self.store.events
        info = await log.info()
        if info.resync_needed(since):
            self.send({"type": "ws.resync", "since": since, "reason":
                       "events after this id are no longer kept; re-read state and resume "
                       "from the next event"})
            return None
        position, sent = since, 0
        while True:
            page = await log.page(after=position, count=REPLAY_PAGE)
            if not page:
                return position
            batch: list[Outgoing] = []
            for raw_id, fields in page:
                entry_id = raw_id.decode()
                try:
                    event = events.decode(fields[EVENT_FIELD], entry_id)
                except Exception:  # noqa: BLE001 - dead-lettered by the feed; skip here
                    continue
                if self.client.subscription.matches(event.type, event.node_id,
                                                    event.cluster_id, event.resource):
                    batch.append(outgoing(entry_id, event))
            self.client.send_many(batch)
            position = page[-1][0].decode()
            sent += len(page)
            if sent > REPLAY_MAX:
                self.send({"type": "ws.resync", "since": since, "reason": "too many missed "
                           "events to replay; re-read state"})
                return None
            await self.wait_for_room()

    async def wait_for_room(self) -> None:
        assert self.client is not None
        transport = self.client.transport
        async with asyncio.timeout(30):
            while transport.get_write_buffer_size() > self.hub.soft_limit:
                await asyncio.sleep(0.01)

    async def send_snapshot(self) -> str:
        assert self.client is not None
        snap = await self.store.events.snapshot()
        sub = self.client.subscription
        in_scope = snapshot_scope(sub)
        count = 0
        messages: list[bytes] = []
        if "node" in in_scope:
            for node in snap.nodes:
                if not sub.nodes or node.id in sub.nodes:
                    messages.append(_json.encode({"type": "node.snapshot", "node_id": node.id,
                                                  "data": node}))
        if "gpio" in in_scope:
            for pin in snap.pins:
                if ((not sub.nodes or pin.spec.node_name in sub.nodes)
                        and (not sub.resources or pin.metadata.name in sub.resources)):
                    messages.append(_json.encode({
                        "type": "gpio.snapshot", "resource": pin.metadata.name,
                        "node_id": pin.spec.node_name, "data": pin}))
        if "cluster" in in_scope:
            for cluster_id, cluster in snap.clusters.items():
                if not sub.clusters or cluster_id in sub.clusters:
                    messages.append(_json.encode({"type": "cluster.snapshot",
                                                  "cluster_id": cluster_id, "data": cluster}))
        count = len(messages)
        messages.append(_json.encode({"type": "ws.snapshot.end", "id": snap.last_id,
                                      "count": count}))
        for message in messages:
            self.client.send(message)
        return snap.last_id


def snapshot_scope(sub: Subscription) -> set[str]:
    categories = {"node", "gpio", "cluster"}
    if not sub.types:
        return categories
    return {c for c in categories if any(t.split(".", 1)[0] in (c, "*") or t.startswith("*")
                                         for t in sub.types)}
