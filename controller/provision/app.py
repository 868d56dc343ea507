"""Wiring into the aiohttp application: typed keys and the provisioner's cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from common.tasks import TaskOwner
from controller import appkeys
from controller.provision.clusters import ClusterService
from controller.provision.credentials import ControllerKey, HostKeys
from controller.provision.jobs import JobStore
from controller.provision.runner import Provisioner
from controller.store.leases import instance_id

CLUSTERS = web.AppKey("clusters", ClusterService)
JOBS = web.AppKey("jobs", JobStore)
SSH_KEY = web.AppKey("ssh_key", ControllerKey)
HOST_KEYS = web.AppKey("host_keys", HostKeys)
PROVISIONER = web.AppKey("provisioner", Provisioner)

LEASE = "provisioning"


def setup(app: web.Application) -> None:
    """Create the services (no I/O) and register the cleanup context."""
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    jobs = JobStore(store)
    app[JOBS] = jobs
    app[CLUSTERS] = ClusterService(store, jobs)
    app[SSH_KEY] = ControllerKey(settings.state_dir)
    app[HOST_KEYS] = HostKeys(store.redis, store.keys)
    app[PROVISIONER] = Provisioner(settings, store, jobs, app[SSH_KEY], app[HOST_KEYS])
    app.cleanup_ctx.append(provisioner_ctx)


async def provisioner_ctx(app: web.Application) -> AsyncIterator[None]:
    """Provisioning is a singleton duty: it runs on the replica that holds the lease."""
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    lease = store.lease(LEASE, instance_id(), settings.lease_ttl)
    tasks = TaskOwner()
    tasks.start("provisioning lease",
                lambda: lease.run_while_held("provisioning", app[PROVISIONER].run))
    yield
    await tasks.close()
