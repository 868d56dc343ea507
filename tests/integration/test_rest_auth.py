"""REST: roles checked in one place, tokens stored hashed, bad input named, no tracebacks."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
import redis.asyncio as aioredis

from common.keys import Keys
from tests.conftest import RunningController
from tests.support.processes import ADMIN_TOKEN


async def make_token(http: aiohttp.ClientSession, url: str, name: str, role: str) -> str:
    async with http.post(f"{url}/api/v1/tokens", json={"name": name, "role": role}) as response:
        assert response.status == 201, await response.text()
        body = await response.json()
    assert body["role"] == role and body["token"].startswith("pic_")
    return str(body["token"])


async def test_roles(controller: RunningController, http: aiohttp.ClientSession,
                     redis_url: str) -> None:
    viewer = await make_token(http, controller.url, "kiosk", "viewer")
    operator = await make_token(http, controller.url, "maker", "operator")
    api = f"{controller.url}/api/v1"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{api}/nodes") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"] == "unauthorized"
        async with anonymous.get(f"{controller.url}/healthz") as response:
            assert response.status == 200
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        async with anonymous.get(f"{api}/nodes", headers=as_viewer) as response:
            assert response.status == 200
        async with anonymous.post(f"{api}/gpio", headers=as_viewer, json={}) as response:
            assert response.status == 403
            assert "operator" in (await response.json())["reason"]
        as_operator = {"Authorization": f"Bearer {operator}"}
        async with anonymous.post(f"{api}/gpio", headers=as_operator, json={}) as response:
            assert response.status == 422  # allowed in, then the body is judged
        async with anonymous.get(f"{api}/tokens", headers=as_operator) as response:
            assert response.status == 403
        async with anonymous.get(f"{api}/whoami", headers=as_operator) as response:
            assert await response.json() == {"name": "maker", "role": "operator"}
    # Stored hashed: neither token is in Redis in the clear.
    client = aioredis.Redis.from_url(redis_url)
    stored = await client.hgetall(Keys().tokens)
    await client.aclose()
    assert hashlib.sha256(viewer.encode()).hexdigest().encode() in stored
    assert not any(viewer.encode() in k or viewer.encode() in v for k, v in stored.items())
    # Revoked tokens stop working at once.
    async with http.delete(f"{api}/tokens/kiosk") as response:
        assert response.status == 204
    async with aiohttp.ClientSession() as anonymous, anonymous.get(
            f"{api}/nodes", headers={"Authorization": f"Bearer {viewer}"}) as response:
        assert response.status == 401


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (b"", 422, "body"),
    (b'{"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin", "metadata": {"name": '
     b'"x"}, "spec": {"nodeName": "pi-1", "pin": "eighteen", "mode": "output"}}', 422,
     "spec.pin"),
    (b'{"apiVersion": "v0", "kind": "GPIOPin", "metadata": {"name": "x"}, '
     b'"spec": {"nodeName": "pi-1", "pin": 3, "mode": "output"}}', 422, "apiVersion"),
    (b'{"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin", "metadata": {"name": '
     b'"Bad_Name"}, "spec": {"nodeName": "pi-1", "pin": 3, "mode": "output"}}', 422,
     "metadata.name"),
    (b'{"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin", "metadata": {"name": '
     b'"x"}, "spec": {"nodeName": "nowhere", "pin": 3, "mode": "output"}}', 422,
     "spec.nodeName"),
])
async def test_bad_bodies_name_the_field(controller: RunningController,
                                         http: aiohttp.ClientSession, body: bytes, status: int,
                                         field: str) -> None:
    async with http.post(f"{controller.url}/api/v1/gpio", data=body,
                         headers={"Content-Type": "application/json"}) as response:
        assert response.status == status
        payload = await response.json()
    assert payload["field"] == field
    assert payload["reason"]
    assert "Traceback" not in str(payload)


async def test_unknown_things_are_404_in_json(controller: RunningController,
                                              http: aiohttp.ClientSession) -> None:
    for path in ("/api/v1/nodes/ghost", "/api/v1/gpio/ghost", "/api/v1/nothing-here"):
        async with http.get(controller.url + path) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"
    async with http.patch(f"{controller.url}/api/v1/gpio/ghost",
                          json={"spec": {"state": "high"}}) as response:
        assert response.status == 404


async def test_login_rejects_bad_tokens_and_tokens_never_echo(
        controller: RunningController) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{controller.url}/api/v1/login",
                                  json={"token": "pic_wrong"}) as response:
            assert response.status == 401
            assert "pic_wrong" not in await response.text()
        async with anonymous.post(f"{controller.url}/api/v1/login", json={}) as response:
            assert response.status == 422
            assert (await response.json())["field"] == "token"
        async with anonymous.get(f"{controller.url}/api/v1/tokens", headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert ADMIN_TOKEN not in await response.text()


async def test_revoking_a_token_ends_its_ui_sessions(controller: RunningController,
                                                      http: aiohttp.ClientSession) -> None:
    token = await make_token(http, controller.url, "tablet", "viewer")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.post(f"{controller.url}/api/v1/login",
                                json={"token": token}) as response:
            assert response.status == 200
        async with browser.get(f"{controller.url}/api/v1/whoami") as response:
            assert (await response.json())["name"] == "tablet"
        async with http.delete(f"{controller.url}/api/v1/tokens/tablet") as response:
            assert response.status == 204
        async with browser.get(f"{controller.url}/api/v1/whoami") as response:
            assert response.status == 401
