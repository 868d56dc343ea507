"""The aiohttp application: built by ``create_app`` (no I/O), resources in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from common import events, redis_client
from common.keys import Keys
from common.tasks import TaskOwner
from controller import appkeys, auth
from controller.api import audit as audit_api
from controller.api import clusters as clusters_api
from controller.api import errors, frontdoor
from controller.api import events as events_api
from controller.api import gpio as gpio_api
from controller.api import health as health_api
from controller.api import jobs as jobs_api
from controller.api import metrics as metrics_api
from controller.api import nodes as nodes_api
from controller.api import tokens as tokens_api
from controller.api.outage import Outage
from controller.duties import duties_ctx
from controller.feed import Feed
from controller.gpio_service import GpioService
from controller.metrics import Metrics
from controller.provision import app as provision_app
from controller.settings import ControllerSettings
from controller.store import Store
from controller.store.agents import AgentAccess
from controller.store.tx import Confirm
from controller.ws import endpoint as ws_endpoint
from controller.ws.access import Access
from controller.ws.catchup import CatchUp
from controller.ws.codes import CloseCode
from controller.ws.hub import Hub
from controller.ws.ops import Ops
from controller.ws.service import Policy, WebSockets

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).parent / "ui"
TRIM_INTERVAL = 60.0


def create_app(settings: ControllerSettings) -> web.Application:
    keys = Keys(settings.redis_prefix)
    redis_url = settings.redis_target()
    redis = redis_client.connect(redis_url, ca_file=settings.redis_ca_file)
    confirm = (Confirm(settings.redis_min_replicas, int(settings.redis_replica_timeout * 1000))
               if settings.redis_min_replicas > 0 else None)
    store = Store(redis, keys, stream_maxlen=settings.stream_maxlen,
                  metrics_history=settings.metrics_history, confirm=confirm)
    hub = Hub(soft_limit=settings.ws_soft_buffer, hard_limit=settings.ws_hard_buffer)
    app = web.Application(middlewares=[
        errors.error_middleware,
        frontdoor.frontdoor_middleware,
        audit_api.audit_middleware,
        auth.make_middleware(lambda request: request.app[appkeys.TOKENS]),
    ])
    app.on_response_prepare.append(frontdoor.add_security_headers)
    app[appkeys.SETTINGS] = settings
    app[appkeys.REDIS] = redis
    app[appkeys.STORE] = store
    app[appkeys.HUB] = hub
    app[appkeys.FEED] = Feed(store.events, hub)
    app[appkeys.OUTAGE] = Outage()
    metrics = app[appkeys.METRICS] = Metrics()
    metrics.watch(hub, app[appkeys.FEED])
    app[appkeys.FEED].listeners.append(metrics.read)
    app[appkeys.FEED].on_published.append(lambda position: metrics.delivered(
        position, time.time() * 1000))
    # What a failover lost may include desired pin states: re-derive what agents read.
    app[appkeys.FEED].on_lost_events.append(lambda: _rebuild_desired(store))
    app[appkeys.TOKENS] = auth.TokenStore(
        store.tokens, settings.session_ttl,
        on_lockout=lambda message: store.events.append(
            events.system_log_created("warning", message, source="auth")))
    catch_up = CatchUp(store)
    app[appkeys.WS] = WebSockets(
        hub=hub, catch_up=catch_up, ops=Ops(catch_up),
        access=Access(app[appkeys.TOKENS], settings.ws_max_per_token),
        policy=Policy(max_message=settings.ws_max_message, rate=settings.ws_max_rate,
                      burst=5 * settings.ws_max_rate))
    app[appkeys.GPIO] = GpioService(store)
    app[appkeys.AGENTS] = AgentAccess(redis, keys, redis_url=redis_url,
                                      agent_address=settings.agent_redis_address)
    app[appkeys.BOOTSTRAPPED] = asyncio.Event()
    app.cleanup_ctx.extend([redis_ctx, bootstrap_ctx, feed_ctx, duties_ctx])
    provision_app.setup(app)
    app.on_shutdown.append(close_sockets)
    for module in (audit_api, metrics_api, health_api, tokens_api, nodes_api, gpio_api,
                   events_api, clusters_api, jobs_api):
        app.add_routes(module.routes)
    # GET only: RFC 6455 upgrades are GET requests, and a HEAD must not get a 101.
    app.router.add_get("/ws", ws_endpoint.handle, allow_head=False)
    add_ui(app)
    return app


def add_ui(app: web.Application) -> None:
    index = UI_DIR / "index.html"

    @auth.requires(None)
    async def ui_index(request: web.Request) -> web.StreamResponse:
        if not index.exists():
            return web.Response(text="Pi-Controller: the Web UI is not installed. "
                                "The API is under /api/v1 and events under /ws.\n")
        return web.FileResponse(index)

    app.router.add_get("/", ui_index)
    if UI_DIR.is_dir():
        app.router.add_static("/ui/", UI_DIR)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[appkeys.REDIS].aclose()


async def bootstrap_ctx(app: web.Application) -> AsyncIterator[None]:
    """Install the bootstrap admin token once Redis answers, without holding up start-up:
    the controller serves /healthz at once and /readyz says when it can do more."""

    async def bootstrap() -> None:
        settings = app[appkeys.SETTINGS]
        while True:
            await redis_client.wait_until_ready(app[appkeys.REDIS], settings.redis_url,
                                                timeout=None)
            try:
                if settings.admin_token:
                    await app[appkeys.TOKENS].ensure(settings.admin_token, "admin", "admin")
            except redis_client.UNAVAILABLE:
                continue
            app[appkeys.BOOTSTRAPPED].set()
            return

    tasks = TaskOwner()
    tasks.start("bootstrap", bootstrap, restart=False)
    yield
    await tasks.close()


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    tasks = TaskOwner()
    tasks.start("event feed", app[appkeys.FEED].run)
    tasks.start("slow-client drain", app[appkeys.HUB].drain_slow_clients)
    tasks.start("ws access watch", app[appkeys.WS].access.watch)
    heartbeat = app[appkeys.SETTINGS].ws_heartbeat
    if heartbeat > 0:
        tasks.start("ws heartbeat", lambda: app[appkeys.HUB].heartbeat(heartbeat))
    tasks.start("stream trimmer", lambda: trim_by_age(app))
    yield
    await tasks.close()


async def trim_by_age(app: web.Application) -> None:
    """Drop events older than the retention age (count is bounded at every XADD)."""
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    while True:
        with contextlib.suppress(*redis_client.UNAVAILABLE):
            await store.events.trim_older_than(settings.stream_max_age)
        await asyncio.sleep(TRIM_INTERVAL)


async def _rebuild_desired(store: Store) -> None:
    await store.gpio.rebuild_desired()


async def close_sockets(app: web.Application) -> None:
    app[appkeys.HUB].close_all(CloseCode.GOING_AWAY, "controller shutting down")
