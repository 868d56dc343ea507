"""/healthz (the process answers) and /readyz (Redis answers and the feed is reading)."""

from __future__ import annotations

from aiohttp import web

from common.redis_client import UNAVAILABLE
from controller import appkeys
from controller.api.errors import json_response
from controller.auth import requires

routes = web.RouteTableDef()


@routes.get("/healthz")
@requires(None)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
@requires(None)
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[appkeys.STORE].events.last_id()
    except UNAVAILABLE:
        return json_response({"status": "unavailable", "reason": "Redis not reachable"}, 503)
    feed = request.app[appkeys.FEED]
    if not feed.ready.is_set() or not request.app[appkeys.BOOTSTRAPPED].is_set():
        return json_response({"status": "starting", "reason": "event feed not reading yet"},
                             503)
    hub = request.app[appkeys.HUB]
    return json_response({"status": "ready", "clients": len(hub), "events": hub.published,
                          "dead_letters": feed.dead_letters, "position": feed.position})
