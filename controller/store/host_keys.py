"""SSH host keys pinned per host (``pic:ssh:host-keys``), so a changed key is refused.

Shared by every replica: a host's first key wins, whichever replica saw it first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from common.redis_client import Redis

if TYPE_CHECKING:
    from controller.store.core import Store


class PinnedKey(msgspec.Struct, kw_only=True):
    host: str
    port: int
    key: str
    """The public key in OpenSSH form ("ssh-ed25519 AAAA...")."""
    fingerprint: str
    pinned_at: float
    node_id: str = ""


_pin_decoder = msgspec.json.Decoder(PinnedKey)
_pin_encoder = msgspec.json.Encoder()


def address(host: str, port: int) -> str:
    return f"{host}:{port}"


class HostKeys:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    async def get(self, host: str, port: int) -> PinnedKey | None:
        raw = await self._redis.hget(self._keys.host_keys, address(host, port))
        return _pin_decoder.decode(raw) if raw else None

    async def all(self) -> list[PinnedKey]:
        raw = await self._redis.hgetall(self._keys.host_keys)
        return sorted((_pin_decoder.decode(v) for v in raw.values()),
                      key=lambda p: (p.host, p.port))

    async def pin(self, pinned: PinnedKey) -> tuple[PinnedKey, bool]:
        """Pin ``pinned`` unless its host has a pin already: returns the pin that holds and
        whether it is ``pinned``, new. One step (HSETNX and HGET in one MULTI/EXEC), so the
        answer is the pin stored, even when two replicas pin the same host at once."""
        field = address(pinned.host, pinned.port)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._keys.host_keys, field, _pin_encoder.encode(pinned))
            pipe.hget(self._keys.host_keys, field)
            created, raw = await pipe.execute()
        return _pin_decoder.decode(raw), bool(created)

    async def forget(self, host: str, port: int) -> bool:
        """Remove a host's pin (its next connection pins the key it then presents)."""
        return bool(await self._redis.hdel(self._keys.host_keys, address(host, port)))
