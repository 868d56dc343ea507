"""Clusters/jobs API without fake Pis: validation, roles, conflicts, jobs across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from common.keys import Keys
from controller import appkeys
from controller.provision import model
from controller.provision.redact import Redactor
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

KEYS = Keys()


class Api:
    def __init__(self, url: str, http: aiohttp.ClientSession, redis: aioredis.Redis) -> None:
        self.url, self.http, self.redis = url, http, redis

    async def call(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
                   ) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.url}{path}", json=body,
                                     headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else None)

    async def node(self, node_id: str, ip: str = "127.0.0.1", **extra: str) -> None:
        await self.redis.hset(KEYS.node(node_id), mapping={"status": "discovered",
                                                           "ip_address": ip, **extra})
        await self.redis.sadd(KEYS.nodes, node_id)


async def start(redis_url: str, state: Path) -> tuple[web.AppRunner, str]:
    from controller.app import create_app
    from controller.settings import ControllerSettings

    port = free_port()
    app = create_app(ControllerSettings(redis_url=redis_url, port=port, admin_token=ADMIN_TOKEN,
                                        state_dir=str(state), lease_ttl=1.0,
                                        ssh_connect_timeout=2.0))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[appkeys.BOOTSTRAPPED].wait(), 20)  # admin token in place
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    runner, url = await start(redis_url, tmp_path / "state")
    client = aioredis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as http:
        yield Api(url, http, client)
    await client.aclose()
    await runner.cleanup()


@pytest.mark.parametrize(("body", "field"), [
    ({"servers": ["a"]}, "name"),
    ({"name": "Bad Name!", "servers": ["a"]}, "name"),
    ({"name": "c", "servers": []}, "servers"),
    ({"name": "c", "servers": ["a", "b"]}, "servers"),
    ({"name": "c", "servers": ["a"], "agents": ["a"]}, "agents"),
    ({"name": "c", "servers": ["a"], "version": "1.31"}, "version"),
    ({"name": "c", "servers": ["a"], "channel": "nightly"}, "channel"),
    ({"name": "c", "servers": ["a"], "disable": ["kube-proxy"]}, "disable"),
    ({"name": "c", "servers": ["a"], "tls_sans": ["not a host"]}, "tls_sans"),
])
async def test_bad_cluster_requests_are_422_naming_the_field(api: Api, body: dict[str, Any],
                                                             field: str) -> None:
    await api.node("a")
    await api.node("b")
    status, error = await api.call("POST", "/api/v1/clusters", body)
    assert status == 422, error
    assert error["field"] == field and error["reason"]
    assert await api.redis.scard(KEYS.clusters) == 0
    assert await api.redis.zcard(KEYS.jobs) == 0


async def test_unknown_node_404_other_cluster_409_and_admin_only(api: Api) -> None:
    status, error = await api.call("POST", "/api/v1/clusters", {"name": "c", "servers": ["x"]})
    assert status == 404 and "node 'x' not found" in error["message"]
    await api.node("a")
    await api.node("b")
    status, created = await api.call("POST", "/api/v1/clusters", {"name": "one",
                                                                  "servers": ["a"]})
    assert status == 201
    status, error = await api.call("POST", "/api/v1/clusters", {"name": "two",
                                                                "servers": ["b", "a"],
                                                                "force": True})
    assert status == 409 and "already in cluster" in error["reason"]
    assert await api.redis.hget(KEYS.node("b"), "cluster_id") is None  # nothing half-done
    status, _ = await api.call("POST", "/api/v1/nodes/nope/provision", {})
    assert status == 404
    status, _ = await api.call("GET", "/api/v1/jobs/job-nope")
    assert status == 404

    status, body = await api.call("POST", "/api/v1/tokens", {"name": "ro", "role": "viewer"})
    viewer = body["token"]
    status, _ = await api.call("POST", "/api/v1/clusters", {"name": "v", "servers": ["b"]},
                               token=viewer)
    assert status == 403
    status, body = await api.call("GET", f"/api/v1/clusters/{created['cluster']['id']}",
                                  token=viewer)
    assert status == 200 and body["name"] == "one"
    status, key = await api.call("GET", "/api/v1/ssh/public-key", token=viewer)
    assert status == 200 and key["public_key"].startswith("ssh-ed25519 ")
    assert "PRIVATE" not in str(key)


async def test_running_job_survives_a_restart_and_never_stays_running(
        redis_url: str, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    runner, url = await start(redis_url, tmp_path / "state")
    async with aiohttp.ClientSession() as http:
        api = Api(url, http, client)
        # Port 1 on loopback refuses: the resumed job fails at connect instead of hanging.
        await api.node("a", ssh_port="1")
        await api.node("b", ssh_port="1")
        status, created = await api.call("POST", "/api/v1/clusters", {
            "name": "r", "servers": ["a"], "agents": ["b"]})
        assert status == 201
        await runner.cleanup()  # the controller goes away...
        # ...leaving jobs "running" as a crash mid-step would; one was cut short too often.
        jobs = {j["node_id"]: model.decode_job(await client.hget(KEYS.job(j["id"]), "job"))
                for j in created["jobs"]}
        for node_id, job in jobs.items():
            job.status = model.RUNNING
            job.interruptions = model.INTERRUPTIONS_LIMIT if node_id == "b" else 0
            await client.hset(KEYS.job(job.id), mapping={"job": model.encode_job(job),
                                                         "status": "running"})
        runner, url = await start(redis_url, tmp_path / "state")
        api.url = url

        async def finished() -> dict[str, Any] | None:
            out = {}
            for node_id, job in jobs.items():
                _, body = await api.call("GET", f"/api/v1/jobs/{job.id}")
                if body["status"] in ("queued", "running"):
                    return None
                out[node_id] = body
            return out
        done = await wait_until(finished, 30, interval=0.1, what="jobs to finish")
        assert done["a"]["status"] == "failed" and done["a"]["failed_step"] == "connect"
        assert "cannot reach pi@127.0.0.1:1" in done["a"]["error"]
        assert done["a"]["interruptions"] == 1
        assert done["b"]["status"] == "interrupted"
        assert "interrupted" in done["b"]["error"]
    await runner.cleanup()
    await client.aclose()


def test_redactor_masks_tokens_keys_and_url_passwords() -> None:
    r = Redactor()
    token = "K10" + "ab" * 30 + "::server:" + "cd" * 16
    r.add(token)
    text = (f"token {token} short {'cd' * 16} K3S_TOKEN=abc123secret redis://:pw@h:6379/0 "
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----")
    out = r(text)
    for secret in (token, "cd" * 16, "abc123secret", ":pw@", "AAAA"):
        assert secret not in out
    assert out.count("***") >= 5


def test_provisioned_unit_is_the_shipped_one() -> None:
    from controller.provision import agent_unit

    shipped = (Path(__file__).parents[2] / "deploy/systemd/pi-agent.service").read_text()
    assert shipped[shipped.index("[Unit]"):] == agent_unit.UNIT
