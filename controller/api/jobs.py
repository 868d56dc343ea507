"""/api/v1/jobs (provisioning jobs) and /api/v1/ssh (the controller's key, pinned host keys)."""

from __future__ import annotations

from aiohttp import web

from common.errors import NotFoundError, ValidationError
from controller.api.errors import json_response, read_json
from controller.api.frontdoor import accepts
from controller.auth import requires
from controller.provision import install_key
from controller.provision.app import CLUSTERS, HOST_KEYS, JOBS, SSH_KEY

routes = web.RouteTableDef()


@routes.get("/api/v1/jobs")
@accepts("node", "cluster", "limit")
async def list_jobs(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ValidationError("limit", "must be an integer") from None
    jobs = await request.app[JOBS].recent(node_id=request.query.get("node", ""),
                                        cluster_id=request.query.get("cluster", ""),
                                        limit=max(1, min(limit, 1000)))
    return json_response({"items": jobs, "count": len(jobs)})


@routes.get("/api/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await request.app[JOBS].get(job_id)
    if job is None:
        raise NotFoundError("job", job_id)
    return json_response(job)


@routes.post("/api/v1/jobs/{job_id}/retry")
@requires("admin")
async def retry_job(request: web.Request) -> web.Response:
    job = await request.app[CLUSTERS].retry(request.match_info["job_id"])
    return json_response(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


@routes.get("/api/v1/ssh/public-key")
async def public_key(request: web.Request) -> web.Response:
    key = request.app[SSH_KEY]
    return json_response({"public_key": key.public_line(), "fingerprint": key.fingerprint(),
                          "hint": "append public_key to ~/.ssh/authorized_keys of the Pi's "
                                  "user, or POST /api/v1/nodes/{id}/ssh-key with its password "
                                  "once"})


@routes.get("/api/v1/ssh/host-keys")
async def host_keys(request: web.Request) -> web.Response:
    pins = await request.app[HOST_KEYS].all()
    return json_response({"items": pins, "count": len(pins)})


@routes.delete("/api/v1/ssh/host-keys/{address}")
@requires("admin")
async def forget_host_key(request: web.Request) -> web.Response:
    address = request.match_info["address"]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValidationError("address", "host:port, e.g. 192.168.1.20:22")
    if not await request.app[HOST_KEYS].forget(host, int(port)):
        raise NotFoundError("host key", address)
    return web.Response(status=204)


@routes.post("/api/v1/nodes/{node_id}/ssh-key")
@requires("admin")
async def install_ssh_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("password"), str) \
            or not body["password"]:
        raise ValidationError("password", "the SSH password of the Pi's user is required "
                              "(used once, never stored)")
    result = await install_key.install(request.app, request.match_info["node_id"],
                                       body["password"], body.get("ssh_user"))
    return json_response(result)
