"""K3s provisioning against real OpenSSH servers dressed up as Raspberry Pis.

Each fake Pi is a network namespace with its own sshd, hostname, device-tree model and
file system overlays (tests/support/fakepi.py); K3s is a stand-in installer that records
what it was asked and creates the files K3s would. The controller runs in this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import NoPermissionError

from common import events
from common.keys import EVENT_FIELD, Keys
from controller import appkeys
from tests.support import fakepi
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns

SKIP = fakepi.namespaces_usable()
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

VERSION = fakepi.KNOWN_VERSIONS[0]
FAKE_AGENT = ("mkdir -p /opt/pi-agent/bin && printf '#!/bin/sh\\nexit 0\\n' > "
              "/opt/pi-agent/bin/pi-agent && chmod 755 /opt/pi-agent/bin/pi-agent")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[fakepi.Fleet]:
    f = fakepi.Fleet(tmp_path / "fleet").start()
    yield f
    f.stop()


class Harness:
    def __init__(self, url: str, app: web.Application, fleet: fakepi.Fleet,
                 http: aiohttp.ClientSession, redis: aioredis.Redis) -> None:
        self.url = url
        self.app = app
        self.fleet = fleet
        self.http = http
        self.redis = redis
        self.keys = Keys()

    async def public_key(self) -> str:
        async with self.http.get(f"{self.url}/api/v1/ssh/public-key") as r:
            assert r.status == 200
            body = await r.json()
        return str(body["public_key"])

    async def pi(self, hostname: str, **kw: Any) -> fakepi.FakePi:
        """A fake Pi with the controller's key, registered as a user would (by address)."""
        pi = self.fleet.add(hostname, await self.public_key(), **kw)
        body = await self.call("POST", "/api/v1/nodes", {"address": pi.ip, "name": hostname})
        assert body["node"]["id"] == hostname and body["ssh"]["reachable"], body
        return pi

    async def node(self, node_id: str, ip: str) -> None:
        await self.redis.hset(self.keys.node(node_id), mapping={
            "status": "discovered", "ip_address": ip, "hostname": node_id, "source": "test"})
        await self.redis.sadd(self.keys.nodes, node_id)

    async def call(self, method: str, path: str, body: Any = None, status: int | None = None
                   ) -> Any:
        async with self.http.request(method, f"{self.url}{path}", json=body) as r:
            data = await r.json() if r.content_type == "application/json" else None
            if status is not None:
                assert r.status == status, (r.status, data)
            return data

    async def finished(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            job = await self.call("GET", f"/api/v1/jobs/{job_id}", status=200)
            return job if job["status"] in ("succeeded", "failed", "interrupted") else None
        return await wait_until(done, timeout, interval=0.1, what=f"job {job_id} to finish")

    async def events(self) -> list[events.Event]:
        entries = await self.redis.xrange(self.keys.events)
        return [events.decode(f[EVENT_FIELD], i.decode()) for i, f in entries]


@pytest.fixture
async def harness(redis_url: str, tmp_path: Path, fleet: fakepi.Fleet
                  ) -> AsyncIterator[Harness]:
    from controller.app import create_app
    from controller.settings import ControllerSettings

    # The "online" install script, served where only the fake Pis can fetch it.
    files = web.Application()
    files.router.add_static("/", fleet.bundle)
    file_runner = web.AppRunner(files)
    await file_runner.setup()
    file_port = free_port()
    await web.TCPSite(file_runner, fleet.gateway, file_port).start()

    port = free_port()
    settings = ControllerSettings(
        redis_url=redis_url, port=port, admin_token=ADMIN_TOKEN, state_dir=str(tmp_path / "st"),
        provision_arch=["aarch64", "armv7l", "x86_64"], lease_ttl=1.5,
        k3s_install_url=f"http://{fleet.gateway}:{file_port}/install.sh",
        k3s_bundle_dir=str(fleet.bundle), ssh_connect_timeout=3.0, reboot_timeout=20.0,
        k3s_ready_timeout=10.0, agent_install_command=FAKE_AGENT,
        agent_redis_address="10.0.0.1:6379")
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[appkeys.BOOTSTRAPPED].wait(), 20)  # admin token in place
    client = aioredis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        yield Harness(f"http://127.0.0.1:{port}", app, fleet, http, client)
    await client.aclose()
    await runner.cleanup()
    await file_runner.cleanup()


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s["name"] == name)


def installs(pi: fakepi.FakePi) -> list[str]:
    return [c for c in pi.read("var/lib/rancher/install.log").split("--\n") if c.strip()]


async def test_one_server_two_agents_in_parallel_then_remove_one(
        harness: Harness, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="controller")
    h = harness
    server = await h.pi("pi-server")
    agent1 = await h.pi("pi-agent-1")
    agent2 = await h.pi("pi-agent-2")

    created = await h.call("POST", "/api/v1/clusters", {
        "name": "home", "servers": ["pi-server"], "agents": ["pi-agent-1", "pi-agent-2"],
        "version": VERSION, "disable": ["traefik"], "tls_sans": ["k3s.home.lan"]}, status=201)
    cluster_id = created["cluster"]["id"]
    jobs = {j["node_id"]: await h.finished(j["id"]) for j in created["jobs"]}
    for node, job in jobs.items():
        assert job["status"] == "succeeded", (node, job["error"], job["steps"])
        assert [s["status"] for s in job["steps"]] == \
            ["done", "done", "skipped", "done", "done", "done", "done"], node

    # In parallel: both agents were past preflight before the server finished installing.
    server_installed = step(jobs["pi-server"], "install_k3s")["finished_at"]
    for agent in ("pi-agent-1", "pi-agent-2"):
        assert step(jobs[agent], "preflight")["finished_at"] < server_installed

    # The first server runs embedded etcd; the agents joined it with the token it holds.
    (first,) = installs(server)
    assert "args=server --cluster-init --tls-san=k3s.home.lan --disable=traefik" in first
    assert f"INSTALL_K3S_VERSION={VERSION}" in first and "K3S_URL" not in first
    token = server.read("var/lib/rancher/k3s/server/node-token").strip()
    assert token.startswith("K10")
    for agent in (agent1, agent2):
        (call,) = installs(agent)
        assert "args=agent --node-name=" in call
        assert f"K3S_URL=https://{server.ip}:6443" in call
        assert "K3S_TOKEN_FILE=/etc/rancher/k3s/join-token" in call and "uid=0" in call
        assert "pi-agent" in agent.read("../systemctl.log")
        assert "PIC_NODE_ID=" in agent.read("etc/pi-agent/agent.env")
    # Each Pi got Redis credentials of its own, at the address the Pis use.
    agent_urls = {}
    for node_id, pi in (("pi-server", server), ("pi-agent-1", agent1), ("pi-agent-2", agent2)):
        env = dict(line.split("=", 1) for line in pi.read("etc/pi-agent/agent.env").split())
        agent_urls[node_id] = env["PIC_REDIS_URL"]
        assert env["PIC_REDIS_URL"].startswith(f"redis://pic%3Aagent%3A{node_id}:")
        assert env["PIC_REDIS_URL"].endswith("@10.0.0.1:6379/0")
    test_redis = redis_url.split("//")[1].split("/", maxsplit=1)[0]
    own = agent_urls["pi-agent-1"].replace("10.0.0.1:6379", test_redis)
    confined = aioredis.Redis.from_url(own)
    try:
        await confined.set(h.keys.alive("pi-agent-1"), 1)
        with pytest.raises(NoPermissionError):
            await confined.hgetall(h.keys.tokens)
    finally:
        await confined.aclose()
        assert agent.read("etc/systemd/system/pi-agent.service").startswith("[Unit]")

    cluster = await h.call("GET", f"/api/v1/clusters/{cluster_id}", status=200)
    assert cluster["status"] == "ready"
    assert {(m["node_id"], m["role"], m["state"]) for m in cluster["members"]} == {
        ("pi-server", "server", "joined"), ("pi-agent-1", "agent", "joined"),
        ("pi-agent-2", "agent", "joined")}
    pins = await h.call("GET", "/api/v1/ssh/host-keys", status=200)
    assert {p["host"] for p in pins["items"]} == {server.ip, agent1.ip, agent2.ip}

    # Remove an agent: drained and deleted on the server, uninstalled on the node.
    removal = await h.call("DELETE", f"/api/v1/clusters/{cluster_id}/nodes/pi-agent-2",
                           status=202)
    removed = await h.finished(removal["id"])
    assert removed["status"] == "succeeded", removed
    kubectl = server.read("var/lib/rancher/kubectl.log")
    assert "drain pi-agent-2" in kubectl and "delete node pi-agent-2" in kubectl
    assert "uninstall k3s-agent" in agent2.read("var/lib/rancher/install.log")
    assert not agent2.read("usr/local/bin/k3s")
    cluster = await h.call("GET", f"/api/v1/clusters/{cluster_id}", status=200)
    assert {m["node_id"] for m in cluster["members"]} == {"pi-server", "pi-agent-1"}

    stream = await h.events()
    added = [e for e in stream if e.type == events.CLUSTER_NODE_ADDED]
    assert sorted(e.data["node_id"] for e in added) == ["pi-agent-1", "pi-agent-2", "pi-server"]
    assert all(e.cluster_id == cluster_id and e.data["ip_address"] for e in added)
    gone = [e for e in stream if e.type == events.CLUSTER_NODE_REMOVED]
    assert [e.data["node_id"] for e in gone] == ["pi-agent-2"]
    statuses = [e.data["status"] for e in stream if e.type == events.NODE_STATUS_CHANGED
                and e.node_id == "pi-agent-1"]
    assert statuses == ["provisioning", "ready"]
    assert any(e.type == events.JOB_PROGRESS for e in stream)

    # Secrets: the token, the Redis password and the private key appear nowhere we show.
    key_text = (Path(h.app[appkeys.SETTINGS].state_dir) / "id_ed25519").read_text()
    key_body = key_text.splitlines()[1]
    shown = b"".join(msgspec.json.encode(e) for e in stream).decode()
    for job in [*jobs.values(), removed]:
        shown += msgspec.json.encode(await h.call("GET", f"/api/v1/jobs/{job['id']}")).decode()
    shown += msgspec.json.encode(await h.call("GET", "/api/v1/ssh/public-key")).decode()
    shown += str(await h.redis.hgetall(h.keys.cluster(cluster_id)))
    shown += caplog.text
    short = token.split("::", 1)[1]
    passwords = [url.split("@")[0].rsplit(":", 1)[1] for url in agent_urls.values()]
    for secret in (token, short, *passwords, key_body):
        assert secret not in shown


async def test_changed_host_key_is_refused(harness: Harness) -> None:
    h = harness
    pi = await h.pi("pi-solo")
    created = await h.call("POST", "/api/v1/clusters", {"name": "solo", "servers": ["pi-solo"]},
                           status=201)
    first = await h.finished(created["jobs"][0]["id"])
    assert first["status"] == "succeeded", first
    (pin,) = (await h.call("GET", "/api/v1/ssh/host-keys", status=200))["items"]
    assert pin["host"] == pi.ip and pin["fingerprint"].startswith("SHA256:")

    pi.new_host_key()  # as if the Pi had been reinstalled, or someone sits in between
    pi.restart_sshd()
    rerun = await h.call("POST", "/api/v1/nodes/pi-solo/provision", status=202)
    assert rerun["id"] != first["id"]
    job = await h.finished(rerun["id"])
    assert job["status"] == "failed" and job["failed_step"] == "connect"
    assert "is not the one pinned" in job["error"] and pin["fingerprint"] in job["error"]
    assert "refusing to connect" in job["error"]
    assert len(installs(pi)) == 1  # nothing ran on the impostor
    node = await h.redis.hget(h.keys.node("pi-solo"), "status")
    assert node == b"failed"

    # The admin removes the pin after checking the new key; the re-run then succeeds.
    await h.call("DELETE", f"/api/v1/ssh/host-keys/{pi.ip}:22", status=204)
    retry = await h.call("POST", "/api/v1/nodes/pi-solo/provision", status=202)
    assert retry["id"] == rerun["id"]  # the failed job resumes
    assert (await h.finished(retry["id"]))["status"] == "succeeded"


async def test_unreachable_and_non_pi_nodes_fail_while_the_others_succeed(
        harness: Harness) -> None:
    h = harness
    await h.pi("pi-s")
    await h.pi("pi-a")
    await h.pi("nuc", model="Intel NUC7i5BNH")
    await h.node("ghost", h.fleet.unused_ip())
    created = await h.call("POST", "/api/v1/clusters", {
        "name": "mixed", "servers": ["pi-s"], "agents": ["pi-a", "nuc", "ghost"],
        "channel": "stable"}, status=201)
    jobs = {j["node_id"]: await h.finished(j["id"]) for j in created["jobs"]}
    assert jobs["pi-s"]["status"] == "succeeded"
    assert jobs["pi-a"]["status"] == "succeeded"
    assert jobs["ghost"]["status"] == "failed" and jobs["ghost"]["failed_step"] == "connect"
    assert f"cannot reach pi@{h.fleet.unused_ip()}:22: no answer within 3s" in \
        jobs["ghost"]["error"]
    assert jobs["nuc"]["failed_step"] == "preflight"
    assert "not a Raspberry Pi (model 'Intel NUC7i5BNH')" in jobs["nuc"]["error"]
    assert "FAIL  not a Raspberry Pi" in step(jobs["nuc"], "preflight")["output"]

    logs = [e for e in await h.events() if e.type == events.SYSTEM_LOG_CREATED
            and e.data["level"] == "error"]
    assert {e.node_id for e in logs} == {"ghost", "nuc"}
    assert any("at step connect" in e.data["message"] for e in logs if e.node_id == "ghost")
    assert any("at step preflight" in e.data["message"] for e in logs if e.node_id == "nuc")
    cluster = await h.call("GET", f"/api/v1/clusters/{created['cluster']['id']}", status=200)
    states = {m["node_id"]: m["state"] for m in cluster["members"]}
    assert states == {"pi-s": "joined", "pi-a": "joined", "nuc": "failed", "ghost": "failed"}


async def test_cgroup_fix_reboots_and_waits_air_gapped(harness: Harness) -> None:
    h = harness
    h.app[appkeys.SETTINGS].__dict__["k3s_install_source"] = "bundle"
    pi = await h.pi("pi-old", cgroups=False)
    assert "cgroup_enable=memory" not in pi.read("boot/firmware/cmdline.txt")
    created = await h.call("POST", "/api/v1/clusters", {"name": "air", "servers": ["pi-old"],
                                                       "version": VERSION}, status=201)
    job = await h.finished(created["jobs"][0]["id"])
    assert job["status"] == "succeeded", job
    cg = step(job, "cgroups")
    assert cg["status"] == "done" and "rebooted, back after" in cg["message"]
    assert pi.boots == 2
    cmdline = pi.read("boot/firmware/cmdline.txt")
    assert cmdline.strip().endswith("rootwait cgroup_memory=1 cgroup_enable=memory")
    assert pi.read("boot/firmware/cmdline.txt.pi-controller.bak").strip().endswith("rootwait")
    # Air-gapped: script and binary came over SFTP; the Pi downloaded nothing.
    (call,) = installs(pi)
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in call
    assert (pi.fs / "home/pi/.pi-controller/k3s/install.sh").exists()
    assert "sftp put install.sh" in step(job, "install_k3s")["output"]


async def test_failed_job_resumes_where_it_failed(harness: Harness) -> None:
    h = harness
    pi = await h.pi("pi-r")
    created = await h.call("POST", "/api/v1/clusters", {
        "name": "resume", "servers": ["pi-r"], "version": "v1.99.0+k3s1"}, status=201)
    cluster_id = created["cluster"]["id"]
    failed = await h.finished(created["jobs"][0]["id"])
    assert failed["status"] == "failed" and failed["failed_step"] == "install_k3s"
    assert "no K3s release v1.99.0+k3s1" in failed["error"]
    (log,) = [e for e in await h.events() if e.type == events.SYSTEM_LOG_CREATED
              and e.data["level"] == "error"]
    assert "at step install_k3s" in log.data["message"]
    assert "v1.99.0+k3s1" in log.data["message"]
    preflight_at = step(failed, "preflight")["started_at"]

    await h.call("PUT", f"/api/v1/clusters/{cluster_id}", {"version": VERSION}, status=200)
    again = await h.call("POST", "/api/v1/nodes/pi-r/provision", status=202)
    assert again["id"] == failed["id"]
    done = await h.finished(again["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert step(done, "preflight")["started_at"] == preflight_at  # not run again
    calls = installs(pi)
    assert len(calls) == 2 and f"INSTALL_K3S_VERSION={VERSION}" in calls[1]


async def test_three_servers_join_one_at_a_time_then_the_cluster_is_deleted(
        harness: Harness) -> None:
    h = harness
    pis = [await h.pi(f"pi-ha-{i}") for i in (1, 2, 3)]
    created = await h.call("POST", "/api/v1/clusters", {
        "name": "ha", "servers": ["pi-ha-1", "pi-ha-2", "pi-ha-3"]}, status=201)
    cluster_id = created["cluster"]["id"]
    jobs = [await h.finished(j["id"]) for j in created["jobs"]]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]
    (first,) = installs(pis[0])
    assert "args=server --cluster-init" in first
    for pi in pis[1:]:
        (call,) = installs(pi)
        assert call.startswith("args=server ") and "--cluster-init" not in call
        assert f"K3S_URL=https://{pis[0].ip}:6443" in call
    # etcd takes one new member at a time: the joining installs did not overlap.
    (a,), (b,) = ([[float(t) for t in line.split()]
                   for line in pi.read("var/lib/rancher/install-times").splitlines()]
                  for pi in pis[1:])
    assert a[1] <= b[0] or b[1] <= a[0], (a, b)

    status, _ = await h.http.delete(f"{h.url}/api/v1/clusters/{cluster_id}"), None
    assert status.status == 202
    removals = (await status.json())["jobs"]
    assert len(removals) == 3
    for removal in removals:
        done = await h.finished(removal["id"])
        assert done["status"] == "succeeded", done
        assert step(done, "drain")["status"] == "skipped"
    for pi in pis:
        assert "uninstall k3s" in pi.read("var/lib/rancher/install.log")
        assert await h.redis.hget(h.keys.node(pi.hostname), "cluster_id") is None
    await h.call("GET", f"/api/v1/clusters/{cluster_id}", status=404)
    assert not await h.redis.sismember(h.keys.clusters, cluster_id)
    removed = [e for e in await h.events() if e.type == events.CLUSTER_NODE_REMOVED]
    assert sorted(e.data["node_id"] for e in removed) == ["pi-ha-1", "pi-ha-2", "pi-ha-3"]


async def test_key_installed_once_with_a_password_that_is_not_kept(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="controller")
    h = harness
    password = "raspberry-Pw-4711"
    pi = h.fleet.add("pi-new", "", password=password)
    await h.node("pi-new", pi.ip)
    # Wrong credentials: the controller's key is not on the Pi yet.
    created = await h.call("POST", "/api/v1/clusters", {"name": "pw", "servers": ["pi-new"]},
                           status=201)
    refused = await h.finished(created["jobs"][0]["id"])
    assert refused["failed_step"] == "connect"
    assert "refused the controller's key" in refused["error"]

    wrong = await h.call("POST", "/api/v1/nodes/pi-new/ssh-key", {"password": "nope"},
                         status=422)
    assert wrong["field"] == "password" and "refused the password given" in wrong["reason"]
    done = await h.call("POST", "/api/v1/nodes/pi-new/ssh-key", {"password": password},
                        status=200)
    assert done["user"] == "pi" and done["installed"].startswith("SHA256:")
    key = await h.public_key()
    assert pi.read("home/pi/.ssh/authorized_keys").strip() == key
    # Idempotent: a second install does not add the key twice.
    await h.call("POST", "/api/v1/nodes/pi-new/ssh-key", {"password": password}, status=200)
    assert pi.read("home/pi/.ssh/authorized_keys").count(key) == 1

    retried = await h.call("POST", f"/api/v1/jobs/{refused['id']}/retry", status=202)
    assert (await h.finished(retried["id"]))["status"] == "succeeded"
    everything = caplog.text + str([await h.redis.dump(k) for k in await h.redis.keys("*")])
    assert password not in everything


async def test_job_cut_short_by_a_lease_takeover_resumes_its_step(harness: Harness) -> None:
    h = harness
    # An installer that takes a while, so the lease can be lost in the middle of it.
    script = fakepi.k3s_script(h.fleet.registry, h.fleet.bundle / "k3s", install_seconds=1.5)
    (h.fleet.bundle / "install.sh").write_text(script)
    pi = await h.pi("pi-lease")
    created = await h.call("POST", "/api/v1/clusters", {"name": "lease", "servers": ["pi-lease"]},
                           status=201)
    job_id = created["jobs"][0]["id"]

    async def installing() -> bool:
        job = await h.call("GET", f"/api/v1/jobs/{job_id}")
        return step(job, "install_k3s")["status"] == "running"
    await wait_until(installing, 20, interval=0.05, what="the install step to start")
    # Another replica holds the lease for a moment: this one stops its duty mid-step.
    await h.redis.set(h.keys.lease("provisioning"), "another-replica", px=2500)
    done = await h.finished(job_id)
    assert done["status"] == "succeeded", done
    assert done["interruptions"] == 1
    assert "--- attempt" not in step(done, "preflight")["output"]  # done steps stayed done
    progress = [e.data for e in await h.events() if e.type == events.JOB_PROGRESS]
    assert {"step": "job", "status": "resumed"}.items() <= next(
        p for p in progress if p["status"] == "resumed").items()
    assert len(installs(pi)) == 2  # the cut-short install ran again, to completion


async def test_two_stock_hostnames_in_one_cluster_fail_one_at_preflight(harness: Harness) -> None:
    h = harness
    key = await h.public_key()
    twins = [h.fleet.add("raspberrypi", key) for _ in range(2)]
    await h.node("pi-a", twins[0].ip)
    await h.node("pi-b", twins[1].ip)
    created = await h.call("POST", "/api/v1/clusters", {
        "name": "twins", "servers": ["pi-a"], "agents": ["pi-b"]}, status=201)
    jobs = {j["node_id"]: await h.finished(j["id"]) for j in created["jobs"]}
    # Both preflights ran at once; exactly one may own the name.
    at_preflight = [j for j in jobs.values() if j["failed_step"] == "preflight"]
    assert len(at_preflight) == 1, [j["error"] for j in jobs.values()]
    assert "hostname 'raspberrypi' is also node" in at_preflight[0]["error"]
    other = next(j for j in jobs.values() if j is not at_preflight[0])
    # The agent joins if the server won the name; if the agent won, the server is not up.
    assert other["status"] == "succeeded" or "first server 'pi-a' is not up" in other["error"]
