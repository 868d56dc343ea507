"""Login for the UI (an HttpOnly session cookie) and API token management."""

from __future__ import annotations

from aiohttp import web

from common.errors import ValidationError
from controller import appkeys
from controller.api.errors import json_response, read_json
from controller.auth import PRINCIPAL, SESSION_COOKIE, principal_of, requires

routes = web.RouteTableDef()


@routes.post("/api/v1/login")
@requires(None)
async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ValidationError("token", "is required")
    store = request.app[appkeys.TOKENS]
    principal = await store.verify(token, request.remote or "?")
    request[PRINCIPAL] = principal  # who logged in, for the audit trail
    session = await store.open_session(principal, token)
    response = json_response({"name": principal.name, "role": principal.role})
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict",
                        max_age=request.app[appkeys.SETTINGS].session_ttl, path="/",
                        secure=request.secure)
    return response


@routes.post("/api/v1/logout")
@requires(None)
async def logout(request: web.Request) -> web.Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        await request.app[appkeys.TOKENS].close_session(session)
        request.app[appkeys.WS].access.recheck()
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    principal = principal_of(request)
    return json_response({"name": principal.name, "role": principal.role})


@routes.get("/api/v1/tokens")
@requires("admin")
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await request.app[appkeys.TOKENS].list()
    return json_response({"items": tokens})


@routes.post("/api/v1/tokens")
@requires("admin")
async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be an object with name and role")
    token = await request.app[appkeys.TOKENS].create(str(body.get("name", "")),
                                                     str(body.get("role", "")))
    # The only time the token is shown: it is stored hashed.
    return json_response({"name": body["name"], "role": body["role"], "token": token}, 201)


@routes.delete("/api/v1/tokens/{name}")
@requires("admin")
async def revoke_token(request: web.Request) -> web.Response:
    await request.app[appkeys.TOKENS].revoke(request.match_info["name"])
    request.app[appkeys.WS].access.recheck()
    return web.Response(status=204)
