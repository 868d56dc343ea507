"""Provisioning jobs: the job records, their index and the queue the provisioner pops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.redis_client import Redis

if TYPE_CHECKING:
    from controller.store.core import Store


class Jobs:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys
