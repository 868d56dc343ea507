"""Health alerts raised per node and condition, so each fires once and recovers once.

``keys.health_alerts`` maps ``node_id|condition`` to when the alert was raised. An alert is
raised or cleared under WATCH together with the event that says so: a replica taking the
duty over neither repeats a warning nor forgets to send the recovery.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
from redis.asyncio.client import Pipeline

from common import events
from common.redis_client import Redis
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store


class Alert(msgspec.Struct, frozen=True):
    """A raised alert."""

    node_id: str
    condition: str
    raised_at: float


def _field(node_id: str, condition: str) -> str:
    return f"{node_id}|{condition}"


def _seconds(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


class Alerts:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    async def active(self) -> list[Alert]:
        """Every raised alert."""
        raw = await self._redis.hgetall(self._keys.health_alerts)
        alerts = []
        for field, value in raw.items():
            node_id, _, condition = field.decode().rpartition("|")
            alerts.append(Alert(node_id, condition, _seconds(value)))
        return alerts

    async def change(self, node_id: str, condition: str, *, raised: bool,
                     event: events.Event) -> bool:
        """Raise (or clear) one alert with ``event``, in one transaction; True when this call
        did, False when it was so already. Raises ConflictError when contention won every
        attempt."""
        key, field = self._keys.health_alerts, _field(node_id, condition)

        async def body(pipe: Pipeline) -> bool:
            if bool(await pipe.hexists(key, field)) == raised:
                return False
            pipe.multi()
            if raised:
                pipe.hset(key, field, f"{time.time():.3f}")
            else:
                pipe.hdel(key, field)
            self._store.stage_event(pipe, event)
            return True

        return await tx.transact(self._redis, [key], body,
                                 what=f"{condition} alert of {node_id!r}", field="node_id")

    async def forget(self, node_id: str) -> None:
        """Drop a deleted node's alerts (no event: the node is gone)."""
        key = self._keys.health_alerts
        fields = [f for f in await self._redis.hkeys(key)
                  if f.decode().rpartition("|")[0] == node_id]
        if fields:
            await self._redis.hdel(key, *fields)
