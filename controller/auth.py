"""API tokens with roles, UI sessions, and the one middleware that checks them.

Roles: ``viewer`` (read, /ws), ``operator`` (also drives GPIO), ``admin`` (everything).
Tokens and session ids are stored only as SHA-256 digests; the plain value is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from common.errors import AuthError, ForbiddenError, NotFoundError, ValidationError
from common.keys import Keys
from common.redis_client import Redis

Role = Literal["viewer", "operator", "admin"]
ROLES: Final[dict[str, int]] = {"viewer": 0, "operator": 1, "admin": 2}
SESSION_COOKIE: Final = "pic_session"
TOKEN_PREFIX: Final = "pic_"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


class Principal(msgspec.Struct, frozen=True):
    name: str
    role: Role
    created: float = 0.0

    def may(self, role: Role) -> bool:
        return ROLES[self.role] >= ROLES[role]


class SessionRecord(msgspec.Struct, frozen=True):
    principal: Principal
    token: str
    """SHA-256 of the token the session was opened with."""


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Principal)
_session_encoder: Final = msgspec.json.Encoder()
_session_decoder: Final = msgspec.json.Decoder(SessionRecord)


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
    def __init__(self, redis: Redis, keys: Keys, session_ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._session_ttl = session_ttl
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def _cached(self, key: str, load: Callable[[], Awaitable[bytes | None]]
                      ) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await load()
        if raw is None:
            self._cache.pop(key, None)
            return None
        principal = _decoder.decode(raw)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, principal)
        return principal

    async def ensure(self, token: str, name: str, role: Role) -> None:
        """Install a token given from outside (the bootstrap admin token)."""
        principal = Principal(name=name, role=role, created=time.time())
        await self._redis.hset(self._keys.tokens, digest(token), _encoder.encode(principal))

    async def create(self, name: str, role: str) -> str:
        if role not in ROLES:
            raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise ValidationError("name", "1-64 letters, digits, '-' or '_'")
        if any(p.name == name for p in await self.list()):
            raise ValidationError("name", f"a token named {name!r} exists already")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.ensure(token, name, role)  # type: ignore[arg-type]
        return token

    async def list(self) -> list[Principal]:
        raw = await self._redis.hgetall(self._keys.tokens)
        return sorted((_decoder.decode(v) for v in raw.values()), key=lambda p: p.name)

    async def revoke(self, name: str) -> None:
        raw = await self._redis.hgetall(self._keys.tokens)
        doomed = [k for k, v in raw.items() if _decoder.decode(v).name == name]
        if not doomed:
            raise NotFoundError("token", name)
        await self._redis.hdel(self._keys.tokens, *doomed)
        self._cache.clear()

    async def by_token(self, token: str) -> Principal | None:
        key = digest(token)
        return await self._cached("t" + key, lambda: self._redis.hget(self._keys.tokens, key))

    async def open_session(self, principal: Principal, token: str) -> str:
        """A UI session for a logged-in token; it ends when the token is revoked."""
        session = secrets.token_urlsafe(32)
        record = SessionRecord(principal=principal, token=digest(token))
        await self._redis.set(self._keys.session(digest(session)),
                              _session_encoder.encode(record), ex=self._session_ttl)
        return session

    async def by_session(self, session: str) -> Principal | None:
        key = self._keys.session(digest(session))

        async def load() -> bytes | None:
            raw = await self._redis.get(key)
            if raw is None:
                return None
            record = _session_decoder.decode(raw)
            if not await self._redis.hexists(self._keys.tokens, record.token):
                return None  # its token was revoked
            return _encoder.encode(record.principal)

        return await self._cached("s" + key, load)

    async def close_session(self, session: str) -> None:
        key = self._keys.session(digest(session))
        self._cache.pop("s" + key, None)
        await self._redis.delete(key)

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError("Authorization must be 'Bearer <token>'")
            principal = await self.by_token(token.strip())
            if principal is None:
                raise AuthError("unknown or revoked token")
            return principal
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            principal = await self.by_session(session)
            if principal is not None:
                return principal
            raise AuthError("session expired: log in again")
        raise AuthError("authentication required: send 'Authorization: Bearer <token>' "
                        "or log in")


PRINCIPAL: Final = web.RequestKey("principal", Principal)
PUBLIC_PREFIXES: Final = ("/ui/",)
"""The UI's static files: the login page must load before anyone is logged in."""


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def make_middleware(store: Callable[[web.Request], TokenStore]) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        role: Role | None = getattr(handler, "required_role", "viewer")
        if (request.match_info.http_exception is not None or role is None
                or request.path == "/" or request.path.startswith(PUBLIC_PREFIXES)):
            return await handler(request)
        principal = await store(request).authenticate(request)
        if not principal.may(role):
            raise ForbiddenError(f"needs role {role}; token {principal.name!r} is "
                                 f"{principal.role}")
        request[PRINCIPAL] = principal
        return await handler(request)

    return auth_middleware
