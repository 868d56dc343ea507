"""API tokens (``pic:tokens``: SHA-256 of the token -> who it is) and UI login sessions
(``pic:session:{digest}``, expiring). Only digests are stored: a token or a session id is
shown once and never kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

import msgspec
from redis.asyncio.client import Pipeline

from common.errors import ConflictError
from common.redis_client import Redis
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store

Role = Literal["viewer", "operator", "admin"]
ROLES: Final[dict[str, int]] = {"viewer": 0, "operator": 1, "admin": 2}


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
_session_decoder: Final = msgspec.json.Decoder(SessionRecord)


class Tokens:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    async def put(self, token_digest: str, principal: Principal, *, confirm: bool = True
                  ) -> None:
        """Store a token; ``confirm``: by replicas too, where the store asks for that (the
        bootstrap token, installed again at every start, is not held up by them)."""
        await self._write(lambda pipe: pipe.hset(self._keys.tokens, token_digest,
                                                 _encoder.encode(principal)), confirm)

    async def _write(self, stage: Callable[[Pipeline], object], confirm: bool = True) -> None:
        """One write, confirmed by replicas where the store asks for that."""
        async def body(pipe: Pipeline) -> None:
            pipe.multi()
            stage(pipe)

        await tx.transact(self._redis, [], body, what="the tokens", field="name",
                          confirm=self._store.confirm if confirm else None)

    async def get(self, token_digest: str) -> Principal | None:
        raw = await self._redis.hget(self._keys.tokens, token_digest)
        return _decoder.decode(raw) if raw is not None else None

    async def all(self) -> list[Principal]:
        raw = await self._redis.hgetall(self._keys.tokens)
        return sorted((_decoder.decode(v) for v in raw.values()), key=lambda p: p.name)

    async def delete_named(self, name: str, *, keep_an_admin: bool = False) -> int:
        """Delete every token named ``name``; how many there were. ``keep_an_admin``: refuse
        (409) if no admin token would be left."""
        key = self._keys.tokens

        async def body(pipe: Pipeline) -> int:
            raw = {k: _decoder.decode(v) for k, v in (await pipe.hgetall(key)).items()}
            doomed = [k for k, p in raw.items() if p.name == name]
            admins_left = [k for k, p in raw.items() if p.role == "admin" and k not in doomed]
            if doomed and keep_an_admin and not admins_left:
                raise ConflictError("name", f"{name!r} holds the last admin token: create "
                                            "another admin token before deleting it")
            if doomed:
                pipe.multi()
                pipe.hdel(key, *doomed)
            return len(doomed)

        return await tx.transact(self._redis, [key], body, what="the tokens", field="name",
                                 confirm=self._store.confirm)

    async def replace_named(self, name: str, token_digest: str, principal: Principal) -> int:
        """Make ``token_digest`` the one token called ``name``; how many others it replaced.
        Not held up by replicas: it is installed again at every start."""
        key = self._keys.tokens

        async def body(pipe: Pipeline) -> int:
            raw = {k.decode(): _decoder.decode(v) for k, v in (await pipe.hgetall(key)).items()}
            others = [k for k, p in raw.items() if p.name == name and k != token_digest]
            pipe.multi()
            if others:
                pipe.hdel(key, *others)
            if token_digest not in raw:
                pipe.hset(key, token_digest, _encoder.encode(principal))
            return len(others)

        return await tx.transact(self._redis, [key], body, what="the tokens", field="name")

    async def put_session(self, session_digest: str, record: SessionRecord, ttl: int) -> None:
        await self._redis.set(self._keys.session(session_digest), _encoder.encode(record),
                              ex=ttl)

    async def session(self, session_digest: str) -> Principal | None:
        """The session's principal, while the session lasts and its token is not revoked."""
        raw = await self._redis.get(self._keys.session(session_digest))
        if raw is None:
            return None
        record = _session_decoder.decode(raw)
        if not await self._redis.hexists(self._keys.tokens, record.token):
            return None
        return record.principal

    async def valid(self, token_digests: list[str], session_digests: list[str]
                    ) -> tuple[set[str], set[str]]:
        """Which of these tokens and sessions still give access (a session: while it lasts
        and its token is not revoked), in two round trips however many there are."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for token_digest in token_digests:
                pipe.hexists(self._keys.tokens, token_digest)
            for session_digest in session_digests:
                pipe.get(self._keys.session(session_digest))
            answers = await pipe.execute()
        tokens = {d for d, alive in zip(token_digests, answers, strict=False) if alive}
        records = {d: _session_decoder.decode(raw) for d, raw in zip(
            session_digests, answers[len(token_digests):], strict=True) if raw is not None}
        if not records:
            return tokens, set()
        alive = await self._redis.hmget(self._keys.tokens, [r.token for r in records.values()])
        sessions = {d for d, token in zip(records, alive, strict=True) if token is not None}
        return tokens, sessions

    async def delete_session(self, session_digest: str) -> None:
        await self._redis.delete(self._keys.session(session_digest))
