"""Wiring into the aiohttp application: typed keys and the provisioner's cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from common.tasks import TaskOwner
from controller import appkeys
from controller.provision.clusters import ClusterService
from controller.provision.credentials import ControllerKey
from controller.provision.runner import Provisioner
from controller.store.host_keys import HostKeys
from controller.store.jobs import Jobs
from controller.store.leases import instance_id

CLUSTERS = web.AppKey("clusters", ClusterService)
JOBS = web.AppKey("jobs", Jobs)
SSH_KEY = web.AppKey("ssh_key", ControllerKey)
HOST_KEYS = web.AppKey("host_keys", HostKeys)
PROVISIONER = web.AppKey("provisioner", Provisioner)

LEASE = "provisioning"


def setup(app: web.Application) -> None:
    """Create the services (no I/O) and register the cleanup context."""
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    app[JOBS] = store.jobs
    app[CLUSTERS] = ClusterService(store)
    app[SSH_KEY] = ControllerKey(settings.state_dir)
    app[HOST_KEYS] = store.host_keys
    app[PROVISIONER] = Provisioner(settings, store, app[SSH_KEY], app[appkeys.AGENTS])
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
