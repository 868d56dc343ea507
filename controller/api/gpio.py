"""/api/v1/gpio: GPIOPin resources (the CRD's shape; a manifest can be POSTed as it is)."""

from __future__ import annotations

from aiohttp import web

from common.errors import NotFoundError
from controller import appkeys
from controller.api.errors import REQUEST_ID, json_response, read_json
from controller.api.frontdoor import accepts
from controller.auth import principal_of, requires

routes = web.RouteTableDef()


@routes.get("/api/v1/gpio")
@accepts("node")
async def list_pins(request: web.Request) -> web.Response:
    pins = await request.app[appkeys.STORE].gpio.all()
    node = request.query.get("node")
    if node:
        pins = [p for p in pins if p.spec.node_name == node]
    return json_response({"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPinList",
                          "items": pins})


@routes.get("/api/v1/gpio/{name}")
async def get_pin(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    pin = await request.app[appkeys.STORE].gpio.get(name)
    if pin is None:
        raise NotFoundError("GPIOPin", name)
    return json_response(pin)


@routes.post("/api/v1/gpio")
@requires("operator")
async def create_pin(request: web.Request) -> web.Response:
    body = await read_json(request)
    pin = await request.app[appkeys.GPIO].create(body, principal_of(request).name,
                                                 request[REQUEST_ID])
    return json_response(pin, 201, {"Location": f"/api/v1/gpio/{pin.metadata.name}"})


@routes.put("/api/v1/gpio/{name}")
@requires("operator")
async def replace_pin(request: web.Request) -> web.Response:
    body = await read_json(request)
    pin = await request.app[appkeys.GPIO].replace(request.match_info["name"], body,
                                                  principal_of(request).name,
                                                  request[REQUEST_ID])
    return json_response(pin)


@routes.patch("/api/v1/gpio/{name}")
@requires("operator")
async def patch_pin(request: web.Request) -> web.Response:
    body = await read_json(request)
    pin = await request.app[appkeys.GPIO].patch(request.match_info["name"], body,
                                                principal_of(request).name, request[REQUEST_ID])
    return json_response(pin)


@routes.delete("/api/v1/gpio/{name}")
@requires("operator")
async def delete_pin(request: web.Request) -> web.Response:
    await request.app[appkeys.GPIO].delete(request.match_info["name"],
                                           principal_of(request).name, request[REQUEST_ID])
    return web.Response(status=204)
