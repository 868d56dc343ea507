"""/api/v1/clusters and the per-node provisioning actions. Mutations need the admin role."""

from __future__ import annotations

from aiohttp import web

from controller.api.errors import json_response, read_json
from controller.auth import requires
from controller.provision.app import CLUSTERS
from controller.provision.model import Job

routes = web.RouteTableDef()


def _accepted(job: Job) -> web.Response:
    return json_response(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


@routes.get("/api/v1/clusters")
async def list_clusters(request: web.Request) -> web.Response:
    clusters = await request.app[CLUSTERS].all()
    return json_response({"items": clusters, "count": len(clusters)})


@routes.post("/api/v1/clusters")
@requires("admin")
async def create_cluster(request: web.Request) -> web.Response:
    cluster, jobs = await request.app[CLUSTERS].create(await read_json(request))
    return json_response({"cluster": cluster, "jobs": jobs}, 201,
                         {"Location": f"/api/v1/clusters/{cluster.id}"})


@routes.get("/api/v1/clusters/{cluster_id}")
async def get_cluster(request: web.Request) -> web.Response:
    return json_response(await request.app[CLUSTERS].get(request.match_info["cluster_id"]))


@routes.put("/api/v1/clusters/{cluster_id}")
@requires("admin")
async def update_cluster(request: web.Request) -> web.Response:
    cluster = await request.app[CLUSTERS].update(request.match_info["cluster_id"],
                                                 await read_json(request))
    return json_response(cluster)


@routes.delete("/api/v1/clusters/{cluster_id}")
@requires("admin")
async def delete_cluster(request: web.Request) -> web.Response:
    jobs = await request.app[CLUSTERS].delete(request.match_info["cluster_id"])
    if not jobs:
        return web.Response(status=204)
    return json_response({"jobs": jobs}, 202)


@routes.get("/api/v1/clusters/{cluster_id}/nodes")
async def list_members(request: web.Request) -> web.Response:
    cluster = await request.app[CLUSTERS].get(request.match_info["cluster_id"])
    return json_response({"items": cluster.members, "count": len(cluster.members)})


@routes.post("/api/v1/clusters/{cluster_id}/nodes")
@requires("admin")
async def add_member(request: web.Request) -> web.Response:
    job = await request.app[CLUSTERS].add_node(request.match_info["cluster_id"],
                                               await read_json(request))
    return _accepted(job)


@routes.delete("/api/v1/clusters/{cluster_id}/nodes/{node_id}")
@requires("admin")
async def remove_member(request: web.Request) -> web.Response:
    job = await request.app[CLUSTERS].remove_node(request.match_info["cluster_id"],
                                                  request.match_info["node_id"])
    return _accepted(job)


@routes.post("/api/v1/nodes/{node_id}/provision")
@requires("admin")
async def provision_node(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    job = await request.app[CLUSTERS].provision_node(request.match_info["node_id"], body)
    return _accepted(job)


@routes.post("/api/v1/nodes/{node_id}/deprovision")
@requires("admin")
async def deprovision_node(request: web.Request) -> web.Response:
    job = await request.app[CLUSTERS].deprovision_node(request.match_info["node_id"])
    return _accepted(job)
