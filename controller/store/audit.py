"""The audit trail (``pic:audit``): who changed what, when, and how it went. One entry per
mutating API call and per login; bounded by count (AUDIT_MAXLEN, approximate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from common.redis_client import Redis

if TYPE_CHECKING:
    from controller.store.core import Store

AUDIT_MAXLEN: Final = 100_000
FIELD: Final = b"a"


class AuditEntry(msgspec.Struct, kw_only=True):
    time: str
    actor: str
    """The token's name, or ``anonymous`` when the request did not authenticate."""
    role: str | None
    action: str
    """Method and route, as ``PATCH /api/v1/gpio/{name}``."""
    target: dict[str, str]
    """The route's parameters (``{"name": "relay"}``)."""
    status: int
    request_id: str
    address: str
    id: str = ""
    """The entry's position in the trail (set when read)."""


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AuditEntry)


class AuditTrail:
    def __init__(self, store: Store, client: Redis) -> None:
        self._redis = client
        self._key = store.keys.audit

    async def record(self, entry: AuditEntry) -> None:
        await self._redis.xadd(self._key, {FIELD: _encoder.encode(entry)},
                               maxlen=AUDIT_MAXLEN, approximate=True)

    async def page(self, *, before: str | None, count: int) -> list[AuditEntry]:
        """Up to ``count`` entries, newest first, before the entry ``before`` (exclusive)."""
        top = f"({before}" if before else "+"
        rows = await self._redis.xrevrange(self._key, max=top, count=count)
        entries = []
        for raw_id, fields in rows:
            entry = _decoder.decode(fields[FIELD])
            entry.id = raw_id.decode()
            entries.append(entry)
        return entries
