"""The front door: security headers on every response, request ids that are safe to log,
CSRF refusals for cookie-authenticated requests from elsewhere, failed logins throttled,
and bodies that cannot hurt the server."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from tests.conftest import RunningController, running_controller
from tests.support import processes
from tests.support.processes import ADMIN_TOKEN
from tests.support.waiting import wait_until

GPIO = {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin"}


@pytest.mark.parametrize("path", ["/api/v1/nodes", "/healthz", "/nope", "/ui/app.css", "/"])
async def test_every_response_carries_the_security_headers(
        controller: RunningController, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(controller.url + path) as reply:
        headers = reply.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in headers  # plain HTTP: HSTS means nothing


@pytest.mark.parametrize(("sent", "kept"), [
    ("req-42.a_b", True), ("x" * 64, True), ("x" * 4096, False), ("two words", False),
    ("semi;colon", False),
])
async def test_request_ids_are_kept_only_when_plain_and_short(
        controller: RunningController, http: aiohttp.ClientSession, sent: str,
        kept: bool) -> None:
    async with http.get(f"{controller.url}/api/v1/nodes",
                        headers={"X-Request-ID": sent}) as reply:
        echoed = reply.headers["X-Request-ID"]
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent and len(echoed) == 32 and echoed.isalnum()


async def browser(controller: RunningController) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(f"{controller.url}/api/v1/login", json={"token": ADMIN_TOKEN},
                            headers={"Origin": controller.url}) as reply:
        assert reply.status == 200, await reply.text()
    return session


@pytest.mark.parametrize(("headers", "body", "refused_because"), [
    ({"Origin": "http://evil.example", "Content-Type": "application/json"}, "{}", "Origin"),
    ({"Content-Type": "application/json"}, "{}", "Origin"),  # neither Origin nor Fetch
    ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, "{}", "Origin"),
    ({"Origin": "SELF", "Content-Type": "text/plain"}, "{}", "must be JSON"),
    ({"Origin": "SELF", "Content-Type": "application/x-www-form-urlencoded"}, "a=1",
     "must be JSON"),
])
async def test_cookie_requests_from_elsewhere_or_not_json_are_refused(
        controller: RunningController, headers: dict[str, str], body: str,
        refused_because: str) -> None:
    session = await browser(controller)
    headers = {k: (controller.url if v == "SELF" else v) for k, v in headers.items()}
    try:
        async with session.post(f"{controller.url}/api/v1/tokens", data=body,
                                headers=headers) as reply:
            answer = await reply.json()
            assert reply.status == 403, answer
            assert refused_because in answer["reason"]
        async with session.get(f"{controller.url}/api/v1/tokens") as reply:
            assert reply.status == 200  # reading is never refused
            assert [t["name"] for t in (await reply.json())["items"]] == ["admin"]
    finally:
        await session.close()


@pytest.mark.parametrize("headers", [
    {"Origin": "SELF"}, {"Sec-Fetch-Site": "same-origin"}])
async def test_cookie_requests_from_our_pages_with_json_pass(
        controller: RunningController, headers: dict[str, str]) -> None:
    session = await browser(controller)
    headers = {k: (controller.url if v == "SELF" else v) for k, v in headers.items()}
    try:
        async with session.post(f"{controller.url}/api/v1/tokens", headers=headers,
                                json={"name": "kiosk", "role": "viewer"}) as reply:
            assert reply.status == 201, await reply.text()
    finally:
        await session.close()


async def test_bearer_requests_are_not_subject_to_csrf_rules(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{controller.url}/api/v1/tokens", headers={
            "Origin": "http://evil.example", "Content-Type": "application/json"},
            data=json.dumps({"name": "script", "role": "viewer"})) as reply:
        assert reply.status == 201, await reply.text()


async def test_a_login_from_a_foreign_page_is_refused(controller: RunningController) -> None:
    async with aiohttp.ClientSession() as anonymous, anonymous.post(
            f"{controller.url}/api/v1/login", json={"token": ADMIN_TOKEN},
            headers={"Origin": "http://evil.example"}) as reply:
        assert reply.status == 403
        assert "Set-Cookie" not in reply.headers


async def test_failed_logins_are_throttled_logged_without_the_token_and_reported_once(
        controller: RunningController, rds: aioredis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    guess = "pic_definitely-not-a-real-token"
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as client:
        async def login(token: str) -> aiohttp.ClientResponse:
            async with client.post(f"{controller.url}/api/v1/login",
                                   json={"token": token}) as reply:
                await reply.read()
                return reply

        statuses = [(await login(guess)).status for _ in range(6)]
        assert statuses == [401] * 6  # five free, the sixth starts a 1 s lock-out
        locked = time.monotonic()
        refused = await login(ADMIN_TOKEN)  # even the right token waits
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"

        async def admitted() -> bool:
            return (await login(ADMIN_TOKEN)).status == 200
        await wait_until(admitted, 5, interval=0.05, what="the lock-out to end")
        waited = time.monotonic() - locked
        assert 0.8 <= waited <= 1.6, waited
        assert (await login(guess)).status == 401  # a success forgot the address
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed login from 127.0.0.1" in text
    assert guess not in text
    warnings = [events.decode(f[EVENT_FIELD], r.decode())
                for r, f in await rds.xrange(Keys().events)]
    lockouts = [e for e in warnings if e.type == "system.log.created"
                and "locked out" in e.data["message"]]
    assert len(lockouts) == 1 and guess not in lockouts[0].data["message"]


async def test_deep_json_is_a_400_naming_the_body(controller: RunningController) -> None:
    async with aiohttp.ClientSession() as client, client.post(
            f"{controller.url}/api/v1/login", data="[" * 100_000 + "]" * 100_000,
            headers={"Content-Type": "application/json"}) as reply:
        body = await reply.json()
    assert reply.status == 400, body
    assert body["field"] == "body" and "nested too deeply" in body["reason"]


async def test_a_since_out_of_range_on_rest_is_a_422(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"since": "1-99999999999999999999999"}) as reply:
        body = await reply.json()
    assert reply.status == 422 and body["field"] == "since", body


async def test_a_new_bootstrap_token_replaces_the_old_one(redis_url: str) -> None:
    old, new = "pic_" + "o" * 40, "pic_" + "n" * 40
    async with running_controller(redis_url, admin_token=old):
        pass
    async with running_controller(redis_url, admin_token=new) as controller, \
            aiohttp.ClientSession() as client:
        for token, status in ((old, 401), (new, 200)):
            async with client.get(f"{controller.url}/api/v1/tokens", headers={
                    "Authorization": f"Bearer {token}"}) as reply:
                assert reply.status == status
                if status == 200:
                    names = [t["name"] for t in (await reply.json())["items"]]
                    assert names == ["admin"]


def test_a_short_bootstrap_token_is_refused_at_start() -> None:
    done = subprocess.run([sys.executable, "-m", "controller", "serve", "--admin-token",
                           "short-secret"], check=False, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pi-controller: PIC_ADMIN_TOKEN must have at least 32 characters "
        "(try: openssl rand -hex 32)"]


async def test_the_last_admin_token_cannot_be_deleted(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    async with http.delete(f"{controller.url}/api/v1/tokens/admin") as reply:
        body = await reply.json()
        assert reply.status == 409, body
        assert body["field"] == "name" and "last admin token" in body["reason"]
    async with http.post(f"{controller.url}/api/v1/tokens",
                         json={"name": "second-admin", "role": "admin"}) as reply:
        second = (await reply.json())["token"]
    async with http.delete(f"{controller.url}/api/v1/tokens/admin") as reply:
        assert reply.status == 204
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {second}"}) as other, \
            other.get(f"{controller.url}/api/v1/tokens") as reply:
        assert [t["name"] for t in (await reply.json())["items"]] == ["second-admin"]


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/api/v1/nodes", {"address": "10.0.0.5\nHost: x"}, "address"),
    ("POST", "/api/v1/nodes", {"address": "pi.local,--token=x"}, "address"),
    ("POST", "/api/v1/nodes", {"address": "127.0.0.1", "name": "pi-1\n"}, "name"),
    ("POST", "/api/v1/clusters", {"name": "lab", "tls_sans": ["ok.local", "a,b"]},
     "tls_sans"),
    ("POST", "/api/v1/clusters", {"name": "lab\n"}, "name"),
    ("POST", "/api/v1/gpio", {**GPIO, "metadata": {"name": "relay\n"},
                              "spec": {"nodeName": "pi-1", "pin": 17, "mode": "output"}},
     "metadata.name"),
    ("PUT", "/api/v1/nodes/pi-strict", {"labels": {f"k{n}": "v" for n in range(65)}},
     "labels"),
    ("PUT", "/api/v1/nodes/pi-strict", {"labels": {"x" * 5000: "v"}}, "labels." + "x" * 58),
])
async def test_input_that_could_smuggle_is_a_4xx_naming_the_field(
        controller: RunningController, http: aiohttp.ClientSession, method: str, path: str,
        body: dict[str, object], field: str) -> None:
    async with http.post(f"{controller.url}/api/v1/nodes",
                         json={"address": "127.0.0.1", "name": "pi-strict"}):
        pass
    async with http.request(method, controller.url + path, json=body) as reply:
        answer = await reply.json()
    assert 400 <= reply.status < 500, answer
    assert answer["field"].startswith(field), answer


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888"])
async def test_nodes_outside_the_node_networks_are_refused_without_a_probe(
        controller: RunningController, http: aiohttp.ClientSession, address: str) -> None:
    async with http.post(f"{controller.url}/api/v1/nodes", json={"address": address}) as reply:
        answer = await reply.json()
    assert reply.status == 422 and answer["field"] == "address", answer
    assert "outside the node networks" in answer["reason"]
    async with http.get(f"{controller.url}/api/v1/nodes") as reply:
        assert (await reply.json())["items"] == []


async def test_half_sent_requests_are_dropped_after_the_idle_timeout(
        redis_url: str, tmp_path: Path) -> None:
    proc = processes.controller(redis_url, tmp_path / "c.log",
                                extra=["--http-idle-timeout", "1"]).start()
    try:
        await processes.wait_ready(proc.url, proc)  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)  # type: ignore[attr-defined]
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await writer.drain()
        for _ in range(5):  # a trickle does not keep it open
            await asyncio.sleep(0.1)
            writer.write(b"X-Slow: 1\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert 0.8 <= time.monotonic() - started <= 2.5
        writer.close()
    finally:
        proc.stop()


async def test_error_bodies_never_echo_a_token(controller: RunningController) -> None:
    guess = "pic_" + "s" * 40
    async with aiohttp.ClientSession() as client:
        for request in (client.post(f"{controller.url}/api/v1/login", json={"token": guess}),
                        client.get(f"{controller.url}/api/v1/nodes",
                                   headers={"Authorization": f"Bearer {guess}"})):
            async with request as reply:
                text = await reply.text()
                assert reply.status == 401 and guess not in text, text


async def test_a_redis_outage_is_one_warning_and_one_line_not_a_traceback_per_request(
        private_redis: object, caplog: pytest.LogCaptureFixture) -> None:
    server = private_redis
    caplog.set_level(logging.WARNING, logger="controller.api")
    # Every write on disk at once, so the admin token survives the kill below (the default
    # fsync each second can lose it, and every call after the restart would be a 401).
    with redis.Redis.from_url(server.url) as admin:  # type: ignore[attr-defined]
        admin.config_set("appendfsync", "always")
    async with running_controller(server.url) as controller, aiohttp.ClientSession(  # type: ignore[attr-defined]
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        server.kill()  # type: ignore[attr-defined]
        for _ in range(5):
            async with http.get(f"{controller.url}/api/v1/nodes") as reply:
                assert reply.status == 503
                assert (await reply.json())["error"] == "unavailable"
        server.start()  # type: ignore[attr-defined]

        async def served() -> bool:
            async with http.get(f"{controller.url}/api/v1/nodes") as reply:
                return reply.status == 200
        await wait_until(served, 20, what="the API served again")
    lines = [r for r in caplog.records if r.name == "controller.api.outage"]
    assert [r.getMessage().split(" (")[0].split(" after")[0] for r in lines] == [
        "Redis unreachable", "Redis reachable again"]
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("controller.api")]


async def test_every_api_read_refuses_a_query_parameter_it_does_not_know(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    paths = set()
    for route in controller.app.router.routes():  # type: ignore[attr-defined]
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or ""
        if route.method == "GET" and path.startswith("/api/"):
            for name in ("name", "node_id", "cluster_id", "job_id", "address"):
                path = path.replace("{" + name + "}", "x")
            paths.add(path)
    assert len(paths) >= 15
    wrong = []
    for path in sorted(paths):
        async with http.get(controller.url + path, params={"colour": "red"}) as reply:
            body = await reply.json()
            if reply.status != 400 or body.get("field") != "colour":
                wrong.append(f"{path}: {reply.status} {body}")
    assert not wrong, "\n".join(wrong)
    async with http.get(f"{controller.url}/api/v1/gpio", params={"node": "pi-1"}) as reply:
        assert reply.status == 200  # a parameter it takes
