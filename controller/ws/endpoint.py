"""The /ws handler: aiohttp authenticates and routes the upgrade; this checks the handshake,
the origin and the query, answers 101, and takes the socket over from aiohttp."""

from __future__ import annotations

import asyncio
from typing import Final, cast
from urllib.parse import urlsplit

from aiohttp import web

from common.errors import ForbiddenError, ValidationError
from controller import appkeys
from controller.auth import credential_of, principal_of
from controller.subscription import Subscription, parse_since
from controller.ws import handshake
from controller.ws.client import Client
from controller.ws.codes import CloseCode
from controller.ws.connection import Connection

QUERY_PARAMS: Final = frozenset({"types", "node", "cluster", "resource", "since", "snapshot"})


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    if origin in allowed:
        return True
    return urlsplit(origin).netloc == host


def parse_flag(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ValidationError(name, "must be 1/true or 0/false")


class Detached(web.StreamResponse):
    """What the handler returns once the connection is ours: aiohttp writes nothing more."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def detach(request: web.Request, protocol: asyncio.Protocol) -> None:
    """Take the socket over from aiohttp after the upgrade.

    aiohttp would keep its HTTP machinery (request, parser, handler task: about 12 KB) alive
    for the whole life of a WebSocket. The /ws protocol needs none of it, so the socket's
    protocol is switched to ours and aiohttp is told the connection is gone, without closing
    it. With 10,000 dashboards that is over 100 MB saved (bench/bench_fanout.py, scenario 4).

    This leans on aiohttp internals of ``web_protocol.RequestHandler`` (pinned in
    pyproject.toml to the versions tested): ``transport`` (set to None, so aiohttp can never
    close the socket it no longer owns); ``connection_lost`` (its clean-up, with the socket
    left open); ``_message_tail`` (bytes the client sent right behind its handshake, already
    read off the socket: they are handed to our protocol, not lost); and
    ``_buffer_paused`` (aiohttp paused reading for a large tail: resumed here).
    """
    # uvloop's transports are not asyncio.Transport subclasses, but have its whole interface.
    transport = cast(asyncio.Transport, request.transport)
    handler = request.protocol
    tail: bytes = getattr(handler, "_message_tail", b"")
    paused: bool = getattr(handler, "_buffer_paused", False)
    transport.set_protocol(protocol)
    handler.transport = None
    handler.connection_lost(None)
    if paused:
        transport.resume_reading()
    if tail:
        protocol.data_received(tail)


async def handle(request: web.Request) -> web.StreamResponse:
    settings = request.app[appkeys.SETTINGS]
    service = request.app[appkeys.WS]
    key = handshake.check(request)
    origin = request.headers.get("Origin")
    if origin and not origin_allowed(origin, request.host, settings.allowed_origins):
        raise ForbiddenError(f"Origin {origin} is not allowed on /ws")
    principal = principal_of(request)
    query = request.query
    refusal: tuple[CloseCode, str] | None = None
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
        refusal = CloseCode.BAD_REQUEST, f"{err.field}: {err.reason}"
    transport = cast(asyncio.Transport, request.transport)
    transport.write(handshake.response(key))
    transport.set_write_buffer_limits(high=service.hub.soft_limit,
                                      low=service.hub.soft_limit // 4)
    client = Client(service.hub, transport, subscription, name=principal.name)
    client.heard(asyncio.get_running_loop().time())
    connection = Connection(service, client)
    connection.hold_ops()  # bytes right behind the handshake may hold ops: they wait
    if refusal is None:
        connection.credential = service.access.admit(client, credential_of(request))
        if connection.credential is None:
            refusal = CloseCode.TOO_MANY, (f"token {principal.name!r} has "
                                           f"{service.access.max_per_token} open sockets "
                                           "already (PIC_WS_MAX_PER_TOKEN)")
    # Refusals come after the upgrade, as close frames, so a browser can read the code and
    # the reason (a failed upgrade shows a browser nothing).
    client.begin_catch_up()
    detach(request, connection)
    if refusal is not None:
        client.kick(*refusal)
        return Detached()
    service.hub.add(client)
    await connection.start(service.catch_up.run(client, since, snapshot))
    return Detached()
