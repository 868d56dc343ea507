"""What every request passes before it reaches a handler, and every response carries.

- **Request ids**: a client's ``X-Request-ID`` is kept only if it is short and plain
  (letters, digits, ``.``, ``_``, ``-``; at most 64), else replaced: it goes into logs.
- **CSRF**: a request that changes something and is authenticated by the session cookie
  (not a bearer token) must come from our own origin (``Origin``, else ``Sec-Fetch-Site:
  same-origin``) and, with a body, say it is JSON. A form or a ``text/plain`` body, which a
  foreign page can send without asking, is refused with 403 saying why. A login is refused
  when the browser says it comes from another site (so no page can log a visitor in as
  someone else); scripts, which send neither header, may log in.
- **Headers**: ``X-Content-Type-Options``, ``Referrer-Policy``, framing forbidden, and HSTS
  when the client came over HTTPS.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from common import grammar
from common.errors import ForbiddenError, QueryError
from controller import appkeys
from controller.auth import SESSION_COOKIE, Handler

H = TypeVar("H", bound=Handler)

REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES: Final = ("application/json", "application/merge-patch+json")
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}
HSTS: Final = "max-age=31536000"
LOGIN_PATH: Final = "/api/v1/login"
API_PREFIX: Final = "/api/"
CLIENT_HTTPS: Final = web.RequestKey("client_https", bool)
"""Whether the client itself used HTTPS (directly, or to a trusted proxy)."""


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def same_origin(request: web.Request, allowed: list[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin in allowed or urlsplit(origin).netloc == request.host
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def foreign(request: web.Request, allowed: list[str]) -> bool:
    """Does a browser say this request comes from another site's page?"""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin not in allowed and urlsplit(origin).netloc != request.host
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def csrf_refusal(request: web.Request, allowed: list[str]) -> str | None:
    """Why this request may not be taken on the strength of a cookie; None if it may."""
    if request.method not in UNSAFE_METHODS or "Authorization" in request.headers:
        return None
    if request.path == LOGIN_PATH:  # no cookie yet: refuse only what a browser says is foreign
        return "a login must come from this controller's own pages" if foreign(
            request, allowed) else None
    if SESSION_COOKIE not in request.cookies:
        return None
    if not same_origin(request, allowed):
        return ("a request authenticated by the session cookie must come from this "
                "controller's own pages (Origin or Sec-Fetch-Site); scripts send "
                "'Authorization: Bearer <token>'")
    if request.body_exists and request.content_type not in JSON_TYPES:
        return f"the body must be JSON (Content-Type {JSON_TYPES[0]})"
    return None


def behind_proxy(request: web.Request, proxies: tuple[grammar.Network, ...]) -> web.Request:
    """The request as the client made it, when it came through a trusted proxy: its scheme
    from X-Forwarded-Proto, its address the nearest X-Forwarded-For hop that is not a
    trusted proxy. Anyone else's forwarding headers are ignored."""
    if not proxies or not grammar.within(request.remote, proxies):
        return request
    scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")
            if h.strip()]
    remote = request.remote or ""
    for hop in reversed(hops):
        remote = hop
        if not grammar.within(hop, proxies):
            break
    return request.clone(scheme=scheme if scheme in ("http", "https") else request.scheme,
                         remote=remote)


@web.middleware
async def frontdoor_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[appkeys.SETTINGS]
    client = behind_proxy(request, grammar.networks(tuple(settings.trusted_proxies),
                                                    "--trusted-proxies"))
    request[CLIENT_HTTPS] = client.secure  # for the headers of whatever response follows
    refusal = csrf_refusal(client, settings.allowed_origins)
    if refusal is not None:
        raise ForbiddenError(refusal)
    if client.method in ("GET", "HEAD") and client.path.startswith(API_PREFIX):
        check_query(client, getattr(handler, "query_params", frozenset()))
    return await handler(client)


def accepts(*names: str) -> Callable[[H], H]:
    """Declare the query parameters a GET endpoint takes; any other is a 400 naming it."""
    def mark(handler: H) -> H:
        handler.query_params = frozenset(names)  # type: ignore[attr-defined]
        return handler
    return mark


def check_query(request: web.Request, accepted: frozenset[str]) -> None:
    unknown = sorted(set(request.query) - accepted)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise QueryError(unknown[0][:64], f"unknown query parameter (this endpoint takes: "
                                          f"{known})")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, errors and static files included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.get(CLIENT_HTTPS, request.secure):
        response.headers.setdefault("Strict-Transport-Security", HSTS)
