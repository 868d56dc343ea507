"""Singleton duties (ingest, liveness, health alerts, discovery), each under its own lease."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from common.tasks import TaskOwner, guarded
from controller import appkeys
from controller.discovery.service import Discovery
from controller.health_alerts import HealthAlerts, Thresholds
from controller.ingest import Bells, Ingest
from controller.liveness import Liveness
from controller.store import leases

logger = logging.getLogger(__name__)


def _under_lease(held: leases.Lease, name: str, run: Callable[[], Awaitable[None]],
                 share: leases.FairShare | None = None) -> Callable[[], Awaitable[None]]:
    # Inside the lease: a failing duty restarts with backoff while this replica keeps the
    # lease, instead of bouncing the lease between replicas.
    return lambda: held.run_while_held(name, lambda: guarded(name, run), share)


async def duties_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    instance = leases.instance_id()
    duties: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("liveness", lambda: Liveness(
            store, heartbeat_interval=settings.heartbeat_interval,
            missed_heartbeats=settings.missed_heartbeats).run()),
        ("health-alerts", lambda: HealthAlerts(
            store, app[appkeys.FEED].listeners, Thresholds(
                temp_warning=settings.health_temp_warning,
                temp_hysteresis=settings.health_temp_hysteresis,
                disk_warning=settings.health_disk_warning)).run()),
    ]
    if settings.discovery or settings.scan_subnet:
        duties.append(("discovery", lambda: Discovery(store, settings).run()))
    tasks = TaskOwner()
    for name, run in duties:
        held = store.lease(name, instance, settings.lease_ttl)
        tasks.start(f"{name} lease", _under_lease(held, name, run))
    # The ingest is sharded: each replica takes an even share of the shards' leases.
    shards = max(settings.ingest_shards, 1)
    share = leases.FairShare(shards)
    bells = Bells(store, shards)
    tasks.start("presence", lambda: store.presence(instance, settings.lease_ttl).keep(share))
    tasks.start("agent rings", bells.run)
    for shard in range(shards):
        name = f"ingest-{shard}"
        held = store.lease(name, instance, settings.lease_ttl)
        tasks.start(f"{name} lease", _under_lease(
            held, name, _ingest(app, bells, shard, shards), share))
    yield
    await tasks.close()


def _ingest(app: web.Application, bells: Bells, shard: int, shards: int
            ) -> Callable[[], Awaitable[None]]:
    settings = app[appkeys.SETTINGS]
    return lambda: Ingest(app[appkeys.STORE], app[appkeys.AGENTS], bells,
                          max_rate=settings.agent_max_rate, batch=settings.ingest_batch,
                          shard=shard, shards=shards).run()
