"""API tokens with roles, UI sessions, and the one middleware that checks them.

Roles: ``viewer`` (read, /ws), ``operator`` (also drives GPIO), ``admin`` (everything).
Tokens and session ids are stored only as SHA-256 digests; the plain value is shown once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from common.errors import AuthError, ForbiddenError, NotFoundError, ValidationError
from controller.login_throttle import LoginThrottle
from controller.store.tokens import ROLES, Principal, Role, SessionRecord, Tokens

logger = logging.getLogger(__name__)

__all__ = ["ROLES", "Credential", "Principal", "Role", "TokenStore", "credential_of", "digest",
           "principal_of", "requires"]

SESSION_COOKIE: Final = "pic_session"
TOKEN_PREFIX: Final = "pic_"

Credential = str
"""What a request authenticated with, as ``token:<sha256>`` or ``session:<sha256>``: open
sockets are tied to it, so they close when it stops giving access."""
TOKEN_CREDENTIAL: Final = "token:"
SESSION_CREDENTIAL: Final = "session:"

MIN_BOOTSTRAP_TOKEN: Final = 32
"""Characters a configured admin token must have: guessing it must stay hopeless."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def requires(role: Role | None) -> Callable[[H], H]:
    """Declare the role a handler needs (None: public). Default for undeclared: viewer."""
    def mark(handler: H) -> H:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler
    return mark


CACHE_SECONDS: Final = 2.0
"""How long a looked-up token is trusted without asking Redis again: a reconnect storm of
thousands of dashboards costs one lookup per token, and a revocation bites within 2 s."""


class TokenStore:
    """Tokens and sessions as authentication needs them: looked up through a short cache."""

    def __init__(self, records: Tokens, session_ttl: int,
                 on_lockout: Callable[[str], Awaitable[object]] | None = None) -> None:
        self._records = records
        self._session_ttl = session_ttl
        self._cache: dict[str, tuple[float, Principal]] = {}
        self.throttle = LoginThrottle()
        self._on_lockout = on_lockout
        """Told (a message without any token) when an address starts being locked out."""

    async def verify(self, token: str, address: str) -> Principal:
        """The token's principal; a wrong one counts against ``address`` (login_throttle),
        and a locked-out address is refused without looking."""
        self.throttle.check(address)
        principal = await self.by_token(token)
        if principal is None:
            if self.throttle.failed(address) and self._on_lockout is not None:
                await self._on_lockout(f"failed logins from {address}: locked out for a while "
                                       "(someone guessing tokens?)")
            raise AuthError("unknown or revoked token")
        self.throttle.succeeded(address)
        return principal

    async def _cached(self, key: str, load: Callable[[], Awaitable[Principal | None]]
                      ) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await load()
        if principal is None:
            self._cache.pop(key, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, principal)
        return principal

    async def ensure(self, token: str, name: str, role: Role) -> None:
        """Install a token given from outside (the bootstrap admin token) as the one token
        called ``name``: a new one replaces the old, which stops working."""
        replaced = await self._records.replace_named(
            name, digest(token), Principal(name=name, role=role, created=time.time()))
        if replaced:
            self._cache.clear()
            logger.info("the %s token was replaced (a new one was configured)", name)

    async def create(self, name: str, role: str) -> str:
        if role not in ROLES:
            raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise ValidationError("name", "1-64 letters, digits, '-' or '_'")
        if any(p.name == name for p in await self.list()):
            raise ValidationError("name", f"a token named {name!r} exists already")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._records.put(digest(token), Principal(
            name=name, role=role, created=time.time()))  # type: ignore[arg-type]
        return token

    async def list(self) -> list[Principal]:
        return await self._records.all()

    async def revoke(self, name: str) -> None:
        """Delete the tokens called ``name``; never the last admin token (that would lock
        every admin out until a restart with a new PIC_ADMIN_TOKEN)."""
        if not await self._records.delete_named(name, keep_an_admin=True):
            raise NotFoundError("token", name)
        self._cache.clear()

    async def by_token(self, token: str) -> Principal | None:
        key = digest(token)
        return await self._cached("t" + key, lambda: self._records.get(key))

    async def open_session(self, principal: Principal, token: str) -> str:
        """A UI session for a logged-in token; it ends when the token is revoked."""
        session = secrets.token_urlsafe(32)
        await self._records.put_session(
            digest(session), SessionRecord(principal=principal, token=digest(token)),
            self._session_ttl)
        return session

    async def by_session(self, session: str) -> Principal | None:
        key = digest(session)
        return await self._cached("s" + key, lambda: self._records.session(key))

    async def close_session(self, session: str) -> None:
        key = digest(session)
        self._cache.pop("s" + key, None)
        await self._records.delete_session(key)

    async def still_valid(self, credentials: Iterable[Credential]) -> set[Credential]:
        """Those of ``credentials`` that still give access, asked of Redis (no cache)."""
        tokens = [c for c in credentials if c.startswith(TOKEN_CREDENTIAL)]
        sessions = [c for c in credentials if c.startswith(SESSION_CREDENTIAL)]
        valid_tokens, valid_sessions = await self._records.valid(
            [c.removeprefix(TOKEN_CREDENTIAL) for c in tokens],
            [c.removeprefix(SESSION_CREDENTIAL) for c in sessions])
        return ({TOKEN_CREDENTIAL + d for d in valid_tokens}
                | {SESSION_CREDENTIAL + d for d in valid_sessions})

    async def authenticate(self, request: web.Request) -> tuple[Principal, Credential]:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError("Authorization must be 'Bearer <token>'")
            principal = await self.verify(token.strip(), request.remote or "?")
            return principal, TOKEN_CREDENTIAL + digest(token.strip())
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            opened = await self.by_session(session)
            if opened is not None:
                return opened, SESSION_CREDENTIAL + digest(session)
            raise AuthError("session expired: log in again")
        raise AuthError("authentication required: send 'Authorization: Bearer <token>' "
                        "or log in")


PRINCIPAL: Final = web.RequestKey("principal", Principal)
CREDENTIAL: Final = web.RequestKey("credential", str)
PUBLIC_PREFIXES: Final = ("/ui/",)
"""The UI's static files: the login page must load before anyone is logged in."""


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def credential_of(request: web.Request) -> Credential:
    return request[CREDENTIAL]


def make_middleware(store: Callable[[web.Request], TokenStore]) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        role: Role | None = getattr(handler, "required_role", "viewer")
        if (request.match_info.http_exception is not None or role is None
                or request.path == "/" or request.path.startswith(PUBLIC_PREFIXES)):
            return await handler(request)
        principal, credential = await store(request).authenticate(request)
        if not principal.may(role):
            raise ForbiddenError(f"needs role {role}; token {principal.name!r} is "
                                 f"{principal.role}")
        request[PRINCIPAL] = principal
        request[CREDENTIAL] = credential
        return await handler(request)

    return auth_middleware
