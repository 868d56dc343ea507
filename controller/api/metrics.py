"""``GET /metrics``: the Prometheus exposition format. A token of any role, or an address in
``PIC_METRICS_ALLOW`` (Prometheus on the same host), may read it."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from common import grammar
from common.redis_client import UNAVAILABLE
from controller import appkeys
from controller.auth import requires

routes = web.RouteTableDef()


@routes.get("/metrics")
@requires(None)  # decided here: an allow-listed scraper needs no token
async def metrics(request: web.Request) -> web.Response:
    settings = request.app[appkeys.SETTINGS]
    if not grammar.within(request.remote, grammar.networks(tuple(settings.metrics_allow),
                                                           "--metrics-allow")):
        await request.app[appkeys.TOKENS].authenticate(request)  # 401 without a token
    figures, store = request.app[appkeys.METRICS], request.app[appkeys.STORE]
    try:
        figures.redis_ping.set(await store.ping())
        figures.set_nodes(await store.nodes.statuses(await store.nodes.ids()))
        figures.jobs_active.set(len(await store.jobs.active_ids()))
    except UNAVAILABLE:
        figures.redis_ping.set(float("nan"))  # the scrape still answers: Redis is away
    # The format the scraper asks for (Accept): OpenMetrics, or the text format.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(figures.registry), headers={"Content-Type": content_type})
