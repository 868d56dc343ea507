"""``Store``: the persistence layer's one entry, holding a repository per aggregate.

The Redis client is private to this package: services reach state only through the
repositories (``store.nodes``, ``store.gpio``, ...), which own their keys, their typed
records and their transactions. Every change of state and its event go in one MULTI/EXEC,
so a client that reads REST and then follows /ws sees neither a gap nor a double.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.asyncio.client import Pipeline

from common import events
from common.keys import EVENT_FIELD, Keys
from common.redis_client import Redis
from controller.store.tx import Confirm

if TYPE_CHECKING:
    from controller.store.leases import Lease, Presence


_APPEND_EVENTS = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
return #ARGV - 1
"""
"""Many events in one command: the same XADDs, without a client round of work per event."""


class Store:
    def __init__(self, client: Redis, keys: Keys, *, stream_maxlen: int,
                 metrics_history: int = 120, confirm: Confirm | None = None) -> None:
        from controller.store.alerts import Alerts
        from controller.store.audit import AuditTrail
        from controller.store.clusters import Clusters
        from controller.store.discovery import DiscoveryRecords
        from controller.store.eventlog import EventLog
        from controller.store.gpio import GpioResources
        from controller.store.host_keys import HostKeys
        from controller.store.ingress import Ingress
        from controller.store.jobs import Jobs
        from controller.store.nodes import Nodes
        from controller.store.tokens import Tokens

        self.keys = keys
        self.confirm = confirm
        """Replicas that must confirm the writes that matter (GPIO, tokens, clusters)."""
        self.stream_maxlen = stream_maxlen
        self.metrics_history = max(metrics_history, 1)
        """Health reports kept per node."""
        self._client = client
        self.nodes = Nodes(self, client)
        self.gpio = GpioResources(self, client)
        self.events = EventLog(self, client)
        self.ingress = Ingress(self, client)
        self.clusters = Clusters(self, client)
        self.jobs = Jobs(self, client)
        self.host_keys = HostKeys(self, client)
        self.discovery = DiscoveryRecords(self, client)
        self.alerts = Alerts(self, client)
        self.tokens = Tokens(self, client)
        self.audit = AuditTrail(self, client)

    async def ping(self) -> float:
        """Seconds Redis takes to answer a PING."""
        started = time.perf_counter()
        await self._client.ping()
        return time.perf_counter() - started

    def lease(self, duty: str, holder: str, ttl: float) -> Lease:
        """The lease of a singleton duty (``pic:lease:{duty}``), held as ``holder``."""
        from controller.store.leases import Lease

        return Lease(self._client, self.keys.lease(duty), holder, ttl)

    def presence(self, instance: str, ttl: float) -> Presence:
        """This replica's presence among the controller replicas (``pic:replicas``)."""
        from controller.store.leases import Presence

        return Presence(self._client, self.keys.replicas, instance, ttl)

    # --- for the repositories: events staged inside their transactions --------------------

    def stage_event(self, pipe: Pipeline, event: events.Event) -> None:
        pipe.xadd(self.keys.events, {EVENT_FIELD: events.encode(event)},
                  maxlen=self.stream_maxlen, approximate=True)

    def stage_events(self, pipe: Pipeline, batch: Sequence[events.Event]) -> None:
        """Append several events, in order, inside the caller's transaction."""
        if len(batch) <= 1:
            for event in batch:
                self.stage_event(pipe, event)
            return
        pipe.eval(_APPEND_EVENTS, 1, self.keys.events, self.stream_maxlen,
                  *map(events.encode, batch))
