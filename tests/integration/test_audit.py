"""The audit trail: what a mutating call or a login leaves behind, who may read it, and its
filters and paging."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import RunningController
from tests.support.processes import ADMIN_TOKEN

GPIO = {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin"}


async def audit(http: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/v1/audit", params=params) as reply:
        body: dict[str, Any] = await reply.json()
        assert reply.status == 200, body
        return body


async def test_a_patch_and_logins_are_recorded_with_who_what_and_how_it_went(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    url = controller.url
    async with http.post(f"{url}/api/v1/nodes",
                         json={"address": "127.0.0.1", "name": "pi-audit"}) as reply:
        node = (await reply.json())["node"]["id"]
    async with http.post(f"{url}/api/v1/gpio", json={**GPIO, "metadata": {"name": "relay"},
                         "spec": {"nodeName": node, "pin": 17, "mode": "output",
                                  "state": "low"}}) as reply:
        assert reply.status == 201, await reply.text()
    async with http.patch(f"{url}/api/v1/gpio/relay", json={"spec": {"state": "high"}},
                          headers={"X-Request-ID": "patch-1"}) as reply:
        assert reply.status == 200
    async with aiohttp.ClientSession() as anonymous:
        for token in ("pic_wrong", ADMIN_TOKEN):
            async with anonymous.post(f"{url}/api/v1/login", json={"token": token}):
                pass
    items = (await audit(http, url))["items"]
    ok_login, bad_login, patch = items[0], items[1], items[2]
    assert patch["action"] == "PATCH /api/v1/gpio/{name}"
    assert patch["target"] == {"name": "relay"}
    assert (patch["actor"], patch["role"], patch["status"]) == ("admin", "admin", 200)
    assert patch["request_id"] == "patch-1" and patch["address"] == "127.0.0.1"
    assert patch["time"].endswith("Z") and patch["id"]
    assert (bad_login["action"], bad_login["actor"], bad_login["status"]) == (
        "POST /api/v1/login", "anonymous", 401)
    assert (ok_login["actor"], ok_login["status"]) == ("admin", 200)
    assert all("pic_wrong" not in str(e) and ADMIN_TOKEN not in str(e) for e in items)
    assert [e["action"] for e in items[3:]] == ["POST /api/v1/gpio", "POST /api/v1/nodes"]


async def test_reads_are_not_recorded_and_only_admins_read_the_trail(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    url = controller.url
    async with http.get(f"{url}/api/v1/nodes"):
        pass
    assert (await audit(http, url))["items"] == []
    async with http.post(f"{url}/api/v1/tokens", json={"name": "ops", "role": "operator"}
                         ) as reply:
        operator = (await reply.json())["token"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {operator}"}) as ops, \
            ops.get(f"{url}/api/v1/audit") as reply:
        assert reply.status == 403


async def test_filters_and_paging(controller: RunningController,
                                  http: aiohttp.ClientSession) -> None:
    url = controller.url
    for name in ("a", "b", "c"):
        async with http.post(f"{url}/api/v1/tokens", json={"name": name, "role": "viewer"}):
            pass
    async with http.delete(f"{url}/api/v1/tokens/nope") as reply:
        assert reply.status == 404
    failed = (await audit(http, url, status="4xx"))["items"]
    assert [(e["action"], e["target"], e["status"]) for e in failed] == [
        ("DELETE /api/v1/tokens/{name}", {"name": "nope"}, 404)]
    first = await audit(http, url, action="post /api/v1/tokens", limit="2")
    assert len(first["items"]) == 2
    rest = await audit(http, url, action="post /api/v1/tokens", before=first["next"])
    assert len(rest["items"]) == 1
    assert not {e["id"] for e in first["items"]} & {e["id"] for e in rest["items"]}
    assert (await audit(http, url, actor="nobody"))["items"] == []
    for params, field, status in (({"limit": "0"}, "limit", 422), ({"status": "4x"}, "status", 422),
                                  ({"colour": "red"}, "colour", 400),
                                  ({"before": "x"}, "before", 422)):
        async with http.get(f"{url}/api/v1/audit", params=params) as reply:
            body = await reply.json()
            assert reply.status == status and body["field"] == field, body
