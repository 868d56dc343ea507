"""The opening handshake of RFC 6455, server side (sections 4.2.1 and 4.2.2).

aiohttp has parsed the request and routed it (GET only: HEAD and other methods get 405 from
the router); this checks the rest and builds the 101 answer. No subprotocol and no
extension is ever agreed, so the answer names neither.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

from aiohttp import web
from multidict import CIMultiDictProxy

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION: Final = "13"


def accept_key(client_key: str) -> str:
    return base64.b64encode(hashlib.sha1(client_key.encode() + GUID).digest()).decode()


def response(client_key: str) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(client_key)}\r\n\r\n").encode()


def _tokens(headers: CIMultiDictProxy[str], name: str) -> set[str]:
    """A comma-separated header's tokens, lower case, over all its lines (RFC 9110 5.3)."""
    return {token.strip().lower() for line in headers.getall(name, ())
            for token in line.split(",")}


def _key_valid(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def check(request: web.Request) -> str:
    """The client's ``Sec-WebSocket-Key`` if the request is a valid upgrade; else the HTTP
    error RFC 6455 asks for (400, or 426 naming the version we speak)."""
    headers = request.headers
    if request.version < (1, 1):
        raise web.HTTPBadRequest(text="WebSocket needs HTTP/1.1 or later")
    if not headers.get("Host"):
        raise web.HTTPBadRequest(text="the Host header is required")
    if "websocket" not in _tokens(headers, "Upgrade"):
        raise web.HTTPBadRequest(text="this endpoint speaks WebSocket only (Upgrade: websocket)")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise web.HTTPBadRequest(text="a WebSocket upgrade needs Connection: Upgrade")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    if not _key_valid(key):
        raise web.HTTPBadRequest(text="Sec-WebSocket-Key must be 16 bytes in base64")
    if headers.get("Sec-WebSocket-Version", "").strip() != VERSION:
        raise web.HTTPUpgradeRequired(text="only WebSocket version 13 is spoken here",
                                      headers={"Sec-WebSocket-Version": VERSION})
    return key
