"""Every close code and ws.error code /ws sends, in one place (docs/websocket.md lists them,
and a test checks that table against these enums)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """Codes of the close frames the server sends."""

    NORMAL = 1000
    """The client closed; this is the echo."""
    GOING_AWAY = 1001
    """The controller is shutting down."""
    PROTOCOL_ERROR = 1002
    """The client broke RFC 6455 (framing, control frames, opcodes, close frame)."""
    INVALID_DATA = 1007
    """A text message or close reason was not valid UTF-8."""
    TOO_BIG = 1009
    """A client message was larger than PIC_WS_MAX_MESSAGE."""
    INTERNAL_ERROR = 1011
    """The server failed on an op (logged)."""
    SLOW_CONSUMER = 4008
    """The client's queue passed the hard limit, or it stayed behind too long."""
    BAD_REQUEST = 4400
    """A query parameter was refused."""
    ACCESS_ENDED = 4401
    """The token was revoked or deleted, or the session logged out or expired."""
    TOO_MANY = 4429
    """Too many messages per second, or too many connections for one token."""


class ErrorCode(StrEnum):
    """``code`` of ws.error: an op was refused, the connection stays open."""

    BAD_MESSAGE = "bad_message"
    UNKNOWN_OP = "unknown_op"
    INVALID_SUBSCRIPTION = "invalid_subscription"
    BAD_SINCE = "bad_since"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"


def received_code_valid(code: int) -> bool:
    """May a peer send ``code`` in a close frame (RFC 6455 section 7.4, IANA registry)?

    1004-1006 and 1015 are reserved for no frame at all; 1016-2999 are unassigned or
    reserved for extensions; 3000-4999 belong to libraries and applications."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999
