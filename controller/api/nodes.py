"""/api/v1/nodes"""

from __future__ import annotations

from aiohttp import web

from common.errors import NotFoundError
from controller import appkeys
from controller.api.errors import json_response

routes = web.RouteTableDef()


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    nodes = await request.app[appkeys.STORE].nodes()
    return json_response({"items": nodes, "count": len(nodes)})


@routes.get("/api/v1/nodes/{node_id}")
async def get_node(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    node = await request.app[appkeys.STORE].node(node_id)
    if node is None:
        raise NotFoundError("node", node_id)
    return json_response(node)
