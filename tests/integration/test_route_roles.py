"""Every route, asked by every role: the role decision of each route is written down here,
and a route the application serves that is not in this table fails the suite."""

from __future__ import annotations

from typing import Final

import aiohttp
import pytest

from tests.conftest import RunningController
from tests.support.processes import ADMIN_TOKEN

PUBLIC: Final = "public"
ROLES: Final = ("anonymous", "viewer", "operator", "admin")
RANK: Final = {"viewer": 1, "operator": 2, "admin": 3}

DECISIONS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("POST", "/api/v1/login"): PUBLIC,
    ("POST", "/api/v1/logout"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/api/v1/whoami"): "viewer",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{name}"): "admin",
    ("GET", "/api/v1/nodes"): "viewer",
    ("POST", "/api/v1/nodes"): "operator",
    ("GET", "/api/v1/nodes/{node_id}"): "viewer",
    ("PUT", "/api/v1/nodes/{node_id}"): "operator",
    ("DELETE", "/api/v1/nodes/{node_id}"): "admin",
    ("POST", "/api/v1/nodes/{node_id}/agent-credentials"): "admin",
    ("DELETE", "/api/v1/nodes/{node_id}/agent-credentials"): "admin",
    ("GET", "/api/v1/nodes/{node_id}/metrics"): "viewer",
    ("GET", "/api/v1/discovery"): "viewer",
    ("GET", "/api/v1/gpio"): "viewer",
    ("GET", "/api/v1/gpio/{name}"): "viewer",
    ("POST", "/api/v1/gpio"): "operator",
    ("PUT", "/api/v1/gpio/{name}"): "operator",
    ("PATCH", "/api/v1/gpio/{name}"): "operator",
    ("DELETE", "/api/v1/gpio/{name}"): "operator",
    ("GET", "/api/v1/events"): "viewer",
    ("GET", "/api/v1/clusters"): "viewer",
    ("POST", "/api/v1/clusters"): "admin",
    ("GET", "/api/v1/clusters/{cluster_id}"): "viewer",
    ("PUT", "/api/v1/clusters/{cluster_id}"): "admin",
    ("DELETE", "/api/v1/clusters/{cluster_id}"): "admin",
    ("GET", "/api/v1/clusters/{cluster_id}/nodes"): "viewer",
    ("POST", "/api/v1/clusters/{cluster_id}/nodes"): "admin",
    ("DELETE", "/api/v1/clusters/{cluster_id}/nodes/{node_id}"): "admin",
    ("POST", "/api/v1/nodes/{node_id}/provision"): "admin",
    ("POST", "/api/v1/nodes/{node_id}/deprovision"): "admin",
    ("GET", "/api/v1/jobs"): "viewer",
    ("GET", "/api/v1/jobs/{job_id}"): "viewer",
    ("POST", "/api/v1/jobs/{job_id}/retry"): "admin",
    ("GET", "/api/v1/ssh/public-key"): "viewer",
    ("GET", "/api/v1/ssh/host-keys"): "viewer",
    ("DELETE", "/api/v1/ssh/host-keys/{address}"): "admin",
    ("POST", "/api/v1/nodes/{node_id}/ssh-key"): "admin",
    ("GET", "/ws"): "viewer",
    ("GET", "/api/v1/audit"): "admin",
    ("GET", "/metrics"): "viewer",  # or an address in PIC_METRICS_ALLOW
}


def served_routes(app: object) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():  # type: ignore[attr-defined]
        if route.method == "HEAD":
            continue  # HEAD answers as its GET does
        info = route.resource.get_info()
        routes.add((route.method, info.get("formatter") or info.get("path")
                    or info.get("prefix")))
    return routes


def test_every_served_route_has_a_decision(controller: RunningController) -> None:
    served = served_routes(controller.app)
    assert served - set(DECISIONS) == set(), "routes without a role decision"
    assert set(DECISIONS) - served == set(), "decisions for routes that do not exist"


@pytest.fixture
async def tokens(controller: RunningController, http: aiohttp.ClientSession
                 ) -> dict[str, str | None]:
    made: dict[str, str | None] = {"anonymous": None, "admin": ADMIN_TOKEN}
    for role in ("viewer", "operator"):
        async with http.post(f"{controller.url}/api/v1/tokens",
                             json={"name": f"as-{role}", "role": role}) as reply:
            made[role] = (await reply.json())["token"]
    return made


async def test_every_route_answers_every_role_as_decided(
        controller: RunningController, tokens: dict[str, str | None]) -> None:
    wrong: list[str] = []
    async with aiohttp.ClientSession() as client:
        for (method, template), needs in sorted(DECISIONS.items()):
            path = "/ui/app.css" if template == "/ui" else template  # the static files
            for name in ("name", "node_id", "cluster_id", "job_id", "address"):
                path = path.replace("{" + name + "}", "no-such-thing")
            for role in ROLES:
                token = tokens[role]
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                body = {} if method in ("POST", "PUT", "PATCH") else None
                async with client.request(method, controller.url + path, json=body,
                                          headers=headers, allow_redirects=False) as reply:
                    status = reply.status
                if needs == PUBLIC or (role != "anonymous" and RANK[role] >= RANK[needs]):
                    allowed = status not in (401, 403) and status < 500
                    if not allowed:
                        wrong.append(f"{method} {template} as {role}: {status}, wanted through")
                elif role == "anonymous" and status != 401:
                    wrong.append(f"{method} {template} as anonymous: {status}, wanted 401")
                elif role != "anonymous" and status != 403:
                    wrong.append(f"{method} {template} as {role}: {status}, wanted 403")
    assert not wrong, "\n".join(wrong)
