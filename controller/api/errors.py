"""Maps exceptions to HTTP responses, in one place. Bodies are JSON; never a traceback.

    {"error": "validation_failed", "field": "spec.pin", "reason": "...", "message": "..."}
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
from aiohttp import web

from common.errors import (
    AuthError,
    ConflictError,
    DecodeError,
    ForbiddenError,
    NotFoundError,
    NotReplicatedError,
    QueryError,
    TemporaryError,
    ThrottledError,
    ValidationError,
)
from common.redis_client import UNAVAILABLE
from controller import appkeys
from controller.api.frontdoor import request_id_of
from controller.auth import Handler

logger = logging.getLogger(__name__)

REQUEST_ID: Final = web.RequestKey("request_id", str)
_json: Final = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, headers=headers,
                        content_type="application/json")


def error_body(err: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for an exception; unexpected ones say nothing inside."""
    if isinstance(err, ConflictError):
        return 409, {"error": "conflict", "field": err.field, "reason": err.reason,
                     "message": str(err)}
    if isinstance(err, QueryError):
        return 400, {"error": "bad_request", "field": err.field, "reason": err.reason,
                     "message": str(err)}
    if isinstance(err, ValidationError):
        return 422, {"error": "validation_failed", "field": err.field, "reason": err.reason,
                     "message": str(err)}
    if isinstance(err, DecodeError):
        return 400, {"error": "bad_request", "field": "body", "reason": str(err),
                     "message": f"body: {err}"}
    if isinstance(err, NotFoundError):
        return 404, {"error": "not_found", "field": err.kind, "reason": str(err),
                     "message": str(err)}
    if isinstance(err, ForbiddenError):
        return 403, {"error": "forbidden", "reason": str(err), "message": str(err)}
    if isinstance(err, AuthError):
        return 401, {"error": "unauthorized", "reason": str(err), "message": str(err)}
    if isinstance(err, ThrottledError):
        return 429, {"error": "too_many_requests", "reason": str(err), "message": str(err)}
    if isinstance(err, NotReplicatedError):
        return 503, {"error": "not_replicated", "reason": str(err), "message": str(err)}
    if isinstance(err, (TemporaryError, *UNAVAILABLE)):
        return 503, {"error": "unavailable", "reason": "the state store is not reachable; "
                     "retry shortly", "message": "service unavailable"}
    return 500, {"error": "internal", "reason": "unexpected error; see the controller log",
                 "message": "internal error"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request_id_of(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"error": exc.reason.lower().replace(" ", "_"), "reason": exc.reason,
                "message": exc.text or exc.reason}
        # Headers the status needs (Allow on 405, Sec-WebSocket-Version on 426) are kept.
        headers = {name: value for name, value in exc.headers.items()
                   if name.lower() not in ("content-type", "content-length")}
        headers["X-Request-ID"] = request[REQUEST_ID]
        return json_response(body, exc.status, headers)
    except Exception as err:
        status, body = error_body(err)
        if isinstance(err, UNAVAILABLE):
            # One warning for the whole outage, not a traceback for every request.
            request.app[appkeys.OUTAGE].began(err)
        elif status >= 500 and not isinstance(err, TemporaryError):
            logger.exception("%s %s failed (request %s)", request.method, request.path,
                             request[REQUEST_ID])
        headers = {"X-Request-ID": request[REQUEST_ID]}
        if isinstance(err, ThrottledError):
            headers["Retry-After"] = str(err.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pi-controller"'
        return json_response(body, status, headers)
    if response.status < 500:
        request.app[appkeys.OUTAGE].ended()
    response.headers.setdefault("X-Request-ID", request[REQUEST_ID])
    return response


def parse_limit(value: str | None, maximum: int, default: int = 100) -> int:
    """A list endpoint's ``limit``: a whole number from 1 to ``maximum``, else a 422."""
    try:
        limit = int(value) if value is not None else default
    except ValueError:
        raise ValidationError("limit", "must be a whole number") from None
    if not 1 <= limit <= maximum:
        raise ValidationError("limit", f"must be 1-{maximum}")
    return limit


async def read_json(request: web.Request, max_bytes: int = 1 << 20) -> Any:
    """The request body as JSON, or a 400/422 naming what is wrong."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ValidationError("body", f"larger than {max_bytes} bytes")
    raw = await request.read()
    if not raw:
        raise ValidationError("body", "a JSON body is required")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise DecodeError(f"not valid JSON: {err}") from err
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
