"""/api/v1/nodes and /api/v1/discovery"""

from __future__ import annotations

from aiohttp import web

from common.errors import NotFoundError, ValidationError
from controller import appkeys, node_admin
from controller.api.errors import json_response, read_json
from controller.api.frontdoor import accepts
from controller.auth import principal_of, requires
from controller.discovery import service

routes = web.RouteTableDef()

METRICS_DEFAULT = 60
METRICS_MAX = 1000


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    nodes = await request.app[appkeys.STORE].nodes.all()
    return json_response({"items": nodes, "count": len(nodes)})


@routes.post("/api/v1/nodes")
@requires("operator")
async def register_node(request: web.Request) -> web.Response:
    """Register a machine by address: ``{"address": "192.168.1.50", "name": "pi-5"}``."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("body", "a JSON object is required")
    address, name = service.validate(body.get("address"), body.get("name"))
    store, settings = request.app[appkeys.STORE], request.app[appkeys.SETTINGS]
    await service.check_network(address, settings.node_networks)
    result = await service.register(store, address, name, settings.ssh_probe_timeout)
    node = await store.nodes.get(result.node_id)
    body = {"node": node, "created": result.created,
            "ssh": {"reachable": result.reachable, "banner": result.banner,
                    "error": result.error}}
    return json_response(body, 201 if result.created else 200,
                         {"Location": f"/api/v1/nodes/{result.node_id}"})


@routes.get("/api/v1/nodes/{node_id}")
async def get_node(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    node = await request.app[appkeys.STORE].nodes.get(node_id)
    if node is None:
        raise NotFoundError("node", node_id)
    return json_response(node)


@routes.put("/api/v1/nodes/{node_id}")
@requires("operator")
async def update_node(request: web.Request) -> web.Response:
    """Set labels (replacing them) and/or maintenance: ``{"labels": {}, "maintenance": true}``.
    """
    labels, maintenance = node_admin.validate_update(await read_json(request))
    settings = request.app[appkeys.SETTINGS]
    node = await node_admin.update(
        request.app[appkeys.STORE], request.match_info["node_id"], labels, maintenance,
        principal_of(request).name, settings.heartbeat_interval * settings.missed_heartbeats)
    return json_response(node)


@routes.delete("/api/v1/nodes/{node_id}")
@requires("admin")
async def delete_node(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    await node_admin.forget(request.app[appkeys.STORE], node_id, principal_of(request).name)
    await request.app[appkeys.AGENTS].revoke(node_id)
    return web.Response(status=204)


@routes.post("/api/v1/nodes/{node_id}/agent-credentials")
@requires("admin")
async def issue_agent_credentials(request: web.Request) -> web.Response:
    """Create or rotate the node's own Redis user; the answer is the only copy of its
    password. The node need not exist yet: its agent registers itself when it starts."""
    credentials = await request.app[appkeys.AGENTS].issue(request.match_info["node_id"])
    return json_response(credentials, 201, {"Cache-Control": "no-store"})


@routes.delete("/api/v1/nodes/{node_id}/agent-credentials")
@requires("admin")
async def revoke_agent_credentials(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    if not await request.app[appkeys.AGENTS].revoke(node_id):
        raise NotFoundError("agent credentials", node_id)
    return web.Response(status=204)


@routes.get("/api/v1/nodes/{node_id}/metrics")
@accepts("limit")
async def node_metrics(request: web.Request) -> web.Response:
    """Recent health reports, newest first; ``?limit=`` (default 60)."""
    raw = request.query.get("limit", str(METRICS_DEFAULT))
    if not raw.isdigit() or not 1 <= int(raw) <= METRICS_MAX:
        raise ValidationError("limit", f"an integer from 1 to {METRICS_MAX}")
    node_id = request.match_info["node_id"]
    items = await node_admin.metrics(request.app[appkeys.STORE], node_id, int(raw))
    return json_response({"node_id": node_id, "items": items, "count": len(items)})


@routes.get("/api/v1/discovery")
async def discovery_view(request: web.Request) -> web.Response:
    """Hosts discovery saw (Pi or not, and why) and the bad records it met."""
    return json_response(await request.app[appkeys.STORE].discovery.view())
