"""Health alerts raised per node and condition, so each fires once and recovers once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.redis_client import Redis

if TYPE_CHECKING:
    from controller.store.core import Store


class Alerts:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys
