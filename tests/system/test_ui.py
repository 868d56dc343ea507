"""The Web UI in headless Chromium against real processes: Redis, the controller, sim agents.

The tests share one environment and run in file order, from looking to changing to breaking:
log in, see nodes, drive GPIO, watch inputs and events, then kill agents and restart the
controller, and last provision a cluster (which needs no agent, only the node's address).
Most also write desktop and phone screenshots of their page to docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from tests.support import processes
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
NODES = ("pi-ui-1", "pi-ui-2", "pi-ui-3")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_MS = 15_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed "
                       "(scripts/test installs Debian's chromium)"),
]

if CHROMIUM.exists():
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

    expect.set_options(timeout=WAIT_MS)


def pin(name: str, node: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
            "metadata": {"name": name}, "spec": {"nodeName": node, **spec}}


@dataclass
class Env:
    redis_url: str
    tmp: Path
    controller: processes.Proc
    port: int
    agents: dict[str, processes.Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_controller(self) -> processes.Proc:
        # Quick liveness so a silent node is noticed within about a second.
        self.controller = processes.controller(
            self.redis_url, self.tmp / "controller.log", port=self.port,
            extra=["--heartbeat-interval", "0.5", "--missed-heartbeats", "2"],
            env={"PYTHONFAULTHANDLER": "1"}).start()
        return self.controller

    def start_agent(self, node: str) -> processes.Proc:
        self.agents[node] = processes.agent(
            self.redis_url, node, self.tmp / f"{node}.log",
            extra=["--gpio", "sim", "--sim-input-interval", "0.4", "--health-interval", "1",
                   "--reconcile-interval", "30"]).start()
        return self.agents[node]

    def stop_controller(self, timeout: float = 15.0, *, strict: bool = True) -> None:
        """SIGTERM; if it does not exit, SIGABRT makes it log every thread's stack.

        Not strict at teardown: a slow shutdown there is left to the controller's own tests
        (the stacks stay in the log), it is not what these tests are about.
        """
        proc = self.controller
        assert proc.process is not None
        proc.signal(signal.SIGTERM)
        try:
            proc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGABRT)
            proc.process.wait(10)
            if strict:
                raise AssertionError(f"controller still running {timeout}s after SIGTERM:\n"
                                     f"{proc.log()[-6000:]}") from None

    async def status(self, method: str, path: str) -> int:
        async with aiohttp.ClientSession(headers=AUTH) as http, http.request(
                method, f"{self.url}/api/v1{path}") as response:
            return response.status

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession(headers=AUTH) as http, http.request(
                method, f"{self.url}/api/v1{path}", json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
              ) -> AsyncIterator[Env]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    tmp = tmp_path_factory.mktemp("ui")
    env = Env(redis_server.url, tmp, controller=None, port=free_port())  # type: ignore[arg-type]
    env.start_controller()
    for node in NODES:
        env.start_agent(node)
    try:
        await processes.wait_ready(env.url, env.controller)

        async def all_ready() -> bool:
            body = await env.api("GET", "/nodes")
            return {n["id"] for n in body["items"] if n["status"] == "ready"} >= set(NODES)

        await wait_until(all_ready, 20, what="agents ready")
        await env.api("POST", "/gpio", pin("led-1", "pi-ui-1", pin=17, mode="output",
                                           state="low"))
        await env.api("POST", "/gpio", pin("fan-1", "pi-ui-1", pin=18, mode="pwm", pwmDuty=30,
                                           pwmFrequency=25000))
        await env.api("POST", "/gpio", pin("button-1", "pi-ui-1", pin=27, mode="input",
                                           pull="up"))
        await env.api("POST", "/gpio", pin("relay-2", "pi-ui-2", pin=22, mode="output",
                                           state="high"))
        yield env
    finally:
        for agent in env.agents.values():
            agent.stop()
        if env.controller.running:
            env.stop_controller(strict=False)


@dataclass
class Browsers:
    browser: Browser
    desktop: Page
    phone: Page
    errors: list[str]

    async def shoot(self, name: str, route: str, ready: str) -> None:
        """Desktop and phone screenshots of one page, once `ready` is visible on both."""
        if os.environ.get("PIC_UI_SCREENSHOTS", "1") == "0":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for page, kind in ((self.desktop, "desktop"), (self.phone, "phone")):
            if route:
                await goto(page, route)
            await expect(page.locator(ready).first).to_be_visible()
            await page.evaluate("document.getElementById('notices')?.replaceChildren()")
            await page.screenshot(path=SCREENSHOTS / f"{name}-{kind}.png", animations="disabled",
                                  caret="hide")


async def goto(page: Page, route: str) -> None:
    base = page.url.split("#", 1)[0]
    await page.evaluate("route => { location.hash = route }", route)
    await page.wait_for_function("route => location.hash.startsWith(route)", arg=route)
    assert page.url.startswith(base)


async def login(context: BrowserContext, url: str, token: str = ADMIN_TOKEN) -> Page:
    page = await context.new_page()
    await page.goto(url + "/")
    await submit_token(page, token)
    return page


async def submit_token(page: Page, token: str = ADMIN_TOKEN) -> None:
    await page.fill("#token", token)
    await page.click("form#login button[type=submit]")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browsers(env: Env) -> AsyncIterator[Browsers]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        desktop_ctx = await browser.new_context(viewport=DESKTOP)
        phone_ctx = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                              device_scale_factor=1)
        desktop = await desktop_ctx.new_page()
        errors: list[str] = []
        desktop.on("pageerror", lambda exc: errors.append(str(exc)))
        desktop.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
                   and "WebSocket" not in msg.text and "Failed to load resource" not in msg.text
                   else None)
        phone = await phone_ctx.new_page()
        for page in (desktop, phone):
            await page.goto(env.url + "/")
        yield Browsers(browser, desktop, phone, errors)
        await browser.close()


async def test_login_shows_role_and_live_nodes(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await expect(page.locator("form#login")).to_be_visible()
    await browsers.shoot("login", "", "form#login")
    await submit_token(browsers.phone)
    await page.fill("#token", "pic_not_a_token")
    await page.click("form#login button[type=submit]")
    await expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("form#login button[type=submit]")
    await expect(page.locator("#role")).to_have_text("admin")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    rows = page.locator("#nodes-table tbody tr")
    await expect(rows).to_have_count(len(NODES))
    for node in NODES:
        row = page.locator(f"#nodes-table tr[data-node='{node}']")
        await expect(row).to_have_attribute("data-status", "ready")
        await expect(row.locator("td[data-label=IP]")).to_have_text("127.0.0.1")
    # Health reports arrive every second: temperature or load fills in without a reload.
    await expect(page.locator("#nodes-table tr[data-node='pi-ui-1'] td[data-label=Load]")
                 ).not_to_have_text("—")
    # Search narrows the table; the status filter too.
    await page.fill("#node-search", "ui-2")
    await expect(rows).to_have_count(1)
    await page.fill("#node-search", "")
    await page.click("button.chip[data-filter=offline]")
    await expect(rows).to_have_count(0)
    await page.click("button.chip[data-filter=all]")
    await expect(rows).to_have_count(len(NODES))
    await browsers.shoot("nodes", "#/nodes", "#nodes-table tbody tr")


async def test_viewer_sees_state_but_no_controls(env: Env, browsers: Browsers) -> None:
    created = await env.api("POST", "/tokens", {"name": "ui-viewer", "role": "viewer"})
    context = await browsers.browser.new_context(viewport=DESKTOP)
    try:
        page = await login(context, env.url, created["token"])
        await expect(page.locator("#role")).to_have_text("viewer")
        await goto(page, "#/gpio/pi-ui-1")
        card = page.locator(".pin-card[data-resource='led-1']")
        await expect(card).to_be_visible()
        await expect(card.locator(".lamp")).to_have_text("low")
        assert await page.locator("button[role=switch], input[type=range]").count() == 0
        # Viewers get no cluster form either; logging out ends the session for /ws and REST.
        await goto(page, "#/clusters")
        await expect(page.locator("#clusters")).to_be_visible()
        assert await page.locator("#cluster-create").count() == 0
        await page.click("header.top button:has-text('Log out')")
        await expect(page.locator("form#login")).to_be_visible()
        response = await page.request.get(env.url + "/api/v1/whoami")
        assert response.status == 401
    finally:
        await context.close()


async def test_admin_hands_out_an_operator_token(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await goto(page, "#/access")
    await page.fill("#token-name", "ui-operator")
    await page.select_option("#token-role", "operator")
    await page.click("#token-create button[type=submit]")
    token = await page.locator("#token-value").text_content()
    assert token and token.startswith("pic_")
    await expect(page.locator("#tokens tr[data-token='ui-operator']")).to_contain_text("operator")

    context = await browsers.browser.new_context(viewport=DESKTOP)
    try:
        operator = await login(context, env.url, token)
        await expect(operator.locator("#role")).to_have_text("operator")
        assert await operator.locator("nav.tabs a[href='#/access']").count() == 0
        await goto(operator, "#/gpio/pi-ui-1")
        await expect(operator.locator(".pin-card[data-resource='led-1'] button[role=switch]")
                     ).to_be_enabled()
        await goto(operator, "#/clusters")
        await expect(operator.locator("#clusters")).to_be_visible()
        assert await operator.locator("#cluster-create").count() == 0
    finally:
        await context.close()

    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#tokens tr[data-token='ui-operator'] button")
    await expect(page.locator("#tokens tr[data-token='ui-operator']")).to_have_count(0)
    response = await page.request.post(env.url + "/api/v1/login", data={"token": token})
    assert response.status == 401


async def test_admin_reads_the_audit_trail(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await env.api("POST", "/tokens", {"name": "ui-audited", "role": "viewer"})
    await goto(page, "#/audit")
    row = page.locator("#audit-rows tr", has_text="POST /api/v1/tokens").first
    await expect(row).to_contain_text("admin")
    await expect(row.locator("td[data-label='Result']")).to_have_text("201")
    await page.select_option("#audit-status", "4xx")
    await page.click("#audit button[type=submit], form[role=search] button[type=submit]")
    await expect(page.locator("#audit-rows tr", has_text="POST /api/v1/tokens")).to_have_count(0)


async def test_flip_output_pending_until_the_agent_confirms(env: Env, browsers: Browsers
                                                           ) -> None:
    page = browsers.desktop
    await goto(page, "#/gpio/pi-ui-1")
    card = page.locator(".pin-card[data-resource='led-1']")
    switch = card.locator("button[role=switch]")
    await expect(switch).to_have_attribute("aria-checked", "false")
    await expect(card).to_have_attribute("data-pending", "false")

    # The node's agent is stopped: the request is accepted but nobody can confirm it yet.
    env.agents["pi-ui-1"].stop()
    await expect(page.locator(".page-head .status")).to_have_attribute("data-status", "offline")
    await switch.click()
    await expect(card).to_have_attribute("data-pending", "true")
    await expect(switch).to_have_attribute("aria-checked", "true")
    await expect(page.locator("#header-box g[data-resource='led-1']")).to_have_class(
        re.compile("hdr-pending"))
    stored = await env.api("GET", "/gpio/led-1")
    assert stored["spec"]["state"] == "high"
    assert stored["status"].get("state") == "low"
    await expect(card).to_have_attribute("data-pending", "true")
    # Back, the agent applies what was asked while it was away and confirms it.
    env.start_agent("pi-ui-1")
    await expect(card).to_have_attribute("data-pending", "false")
    await expect(card).to_have_attribute("data-state", "high")
    stored = await env.api("GET", "/gpio/led-1")
    assert stored["status"]["state"] == "high"
    assert stored["status"]["observedGeneration"] >= stored["metadata"]["generation"]

    # The PWM slider: a new duty is pending, then confirmed by the agent.
    fan = page.locator(".pin-card[data-resource='fan-1']")
    await fan.locator("input[type=range]").fill("75")
    await expect(fan.locator("output.duty")).to_have_text("75 %")
    await expect(fan).to_have_attribute("data-pending", "false")

    async def duty_applied() -> bool:
        body = await env.api("GET", "/gpio/fan-1")
        return bool(body["status"].get("pwmDuty") == 75
                    and body["status"]["observedGeneration"] >= body["metadata"]["generation"])

    await wait_until(duty_applied, 10, what="fan-1 at 75 %")
    await browsers.shoot("gpio", "#/gpio/pi-ui-1", ".pin-card[data-resource='led-1']")


async def test_input_changes_arrive_live(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await goto(page, "#/gpio/pi-ui-1")
    card = page.locator(".pin-card[data-resource='button-1']")
    await expect(card).to_be_visible()
    first = await card.get_attribute("data-state")
    assert first in ("high", "low")
    other = "low" if first == "high" else "high"
    await expect(card).to_have_attribute("data-state", other)
    await expect(card.locator(".lamp")).to_have_text(other)
    await expect(page.locator("#header-box g[data-resource='button-1']")).to_have_count(1)


async def test_event_log_filters_and_pauses(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await goto(page, "#/events")
    log = page.locator("#event-log li.ev")
    await expect(log.first).to_be_visible()
    await page.select_option("#event-type", "gpio.state.changed")
    await page.select_option("#event-node", "pi-ui-1")
    await expect(page.locator("#event-log li.ev[data-type='gpio.state.changed']").first
                 ).to_be_visible()
    types = await log.evaluate_all("els => els.map(e => e.dataset.type + '/' + e.dataset.node)")
    assert types and set(types) == {"gpio.state.changed/pi-ui-1"}

    # Paused, the list holds still while new input changes are counted.
    await page.click("#event-pause")
    newest = await log.first.get_attribute("data-id")
    await expect(page.locator("#event-pause")).to_contain_text("new")
    assert await log.first.get_attribute("data-id") == newest
    await page.click("#event-pause")
    await expect(log.first).not_to_have_attribute("data-id", newest or "")
    await page.select_option("#event-type", "")
    await page.select_option("#event-node", "")
    await expect(page.locator("#event-log li.ev[data-type='node.health.reported']").first
                 ).to_be_visible()
    await browsers.shoot("events", "#/events", "#event-log li.ev")


async def test_node_page_charts_health_and_lists_pins(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await goto(page, "#/nodes/pi-ui-1")
    await expect(page.locator("#charts svg.spark").first).to_be_visible()
    await expect(page.locator("#node-pins tr[data-resource='led-1']")).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("127.0.0.1")
    # Maintenance round trip: the status badge follows node.status.changed.
    badge = page.locator(".page-head .status")
    await page.click("#maintenance")
    await expect(badge).to_have_attribute("data-status", "maintenance")
    await expect(page.locator("#maintenance")).to_have_text("End maintenance")
    await page.click("#maintenance")
    await expect(badge).to_have_attribute("data-status", "ready")
    await browsers.shoot("node", "#/nodes/pi-ui-1", "#charts svg.spark")


async def test_node_goes_offline_when_its_agent_is_killed(env: Env, browsers: Browsers) -> None:
    page = browsers.desktop
    await goto(page, "#/nodes")
    row = page.locator("#nodes-table tr[data-node='pi-ui-3']")
    await expect(row).to_have_attribute("data-status", "ready")
    # SIGKILL: the agent says nothing; the controller's liveness duty notices the silence.
    env.agents["pi-ui-3"].kill()
    await expect(row).to_have_attribute("data-status", "offline")
    await expect(row.locator(".status")).to_have_text("offline")
    await expect(page.locator("button.chip[data-filter=offline] .count")).to_have_text("1")


async def last_event(redis_url: str, node: str, type_: str) -> events.Event | None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrevrange(Keys().events, count=200)
    finally:
        await client.aclose()
    for raw_id, fields in entries:
        event = events.decode(fields[EVENT_FIELD], raw_id.decode())
        if event.type == type_ and event.node_id == node:
            return event
    return None


async def test_indicator_and_catch_up_after_controller_restart(env: Env, browsers: Browsers
                                                               ) -> None:
    page = browsers.desktop
    await goto(page, "#/nodes")
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "live")
    row = page.locator("#nodes-table tr[data-node='pi-ui-2']")
    await expect(row).to_have_attribute("data-status", "ready")

    env.stop_controller()
    await expect(conn).to_have_attribute("data-state", "down")
    await expect(conn).to_contain_text("Offline")
    await browsers.shoot("disconnected", "", "#conn[data-state=down]")

    # While the controller is away the agent reports that it stops: the report waits in the
    # node's own stream, and nothing is announced until a controller applies it.
    env.agents["pi-ui-2"].signal(signal.SIGTERM)
    assert env.agents["pi-ui-2"].wait(15) == 0
    client = aioredis.Redis.from_url(env.redis_url)
    try:
        assert await client.xlen(Keys().ingress("pi-ui-2")) >= 1
    finally:
        await client.aclose()
    before = await last_event(env.redis_url, "pi-ui-2", "node.status.changed")
    assert before is not None and before.data["status"] == "ready"
    await expect(row).to_have_attribute("data-status", "ready")

    env.start_controller()
    await processes.wait_ready(env.url, env.controller)
    await expect(conn).to_have_attribute("data-state", "live", timeout=20_000)
    await expect(row).to_have_attribute("data-status", "offline")
    missed = await last_event(env.redis_url, "pi-ui-2", "node.status.changed")
    assert missed is not None and missed.data["status"] == "offline"
    await goto(page, "#/events")
    await expect(page.locator(f"#event-log li.ev[data-id='{missed.id}']")).to_be_visible()
    # Caught up by replaying from the last event id, not by a fresh snapshot.
    assert await conn.get_attribute("data-mode") == "resume"
    assert not browsers.errors, browsers.errors


async def test_resync_reloads_state_when_missed_events_are_gone(env: Env, browsers: Browsers
                                                               ) -> None:
    page = browsers.desktop
    await goto(page, "#/nodes")
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "live")
    row = page.locator("#nodes-table tr[data-node='pi-ui-1']")
    await expect(row).not_to_have_attribute("data-status", "offline")

    env.stop_controller()
    await expect(conn).to_have_attribute("data-state", "down")
    env.agents["pi-ui-1"].signal(signal.SIGTERM)
    assert env.agents["pi-ui-1"].wait(15) == 0
    # As if a flood of events had pushed the offline one (and all the UI missed) out of the
    # stream: only a fresh snapshot can tell the UI that pi-ui-1 went offline.
    client = aioredis.Redis.from_url(env.redis_url)
    try:
        await client.xtrim(Keys().events, maxlen=0, approximate=False)
        await client.xadd(Keys().events, {EVENT_FIELD: events.encode(events.system_log_created(
            "info", "stream trimmed by the UI test", source="test"))})
    finally:
        await client.aclose()

    env.start_controller()
    await processes.wait_ready(env.url, env.controller)
    await expect(conn).to_have_attribute("data-mode", "resync", timeout=20_000)
    await expect(conn).to_have_attribute("data-state", "live")
    await expect(row).to_have_attribute("data-status", "offline")
    await expect(page.locator("#notices")).to_contain_text("state reloaded")
    assert not browsers.errors, browsers.errors


async def test_clusters_create_from_nodes_and_show_a_failed_job(env: Env, browsers: Browsers
                                                                ) -> None:
    page = browsers.desktop
    await goto(page, "#/clusters")
    await expect(page.locator("h1")).to_have_text("Clusters")
    await expect(page.locator("#clusters")).to_be_visible()
    if await env.status("GET", "/clusters") == 404:
        await expect(page.locator("#clusters")).to_contain_text("does not offer cluster")
        await browsers.shoot("clusters", "#/clusters", "#clusters")
        return
    await page.fill("#cluster-name", "ui-lab")
    await page.select_option("#cluster-picks select[data-node='pi-ui-1']", "server")
    await page.click("#cluster-create button[type=submit]")
    card = page.locator("#clusters section[data-cluster]", has_text="ui-lab")
    await expect(card.locator(".member[data-node='pi-ui-1']")).to_be_visible()
    await expect(card.locator(".job .step[data-step='connect']")).to_be_visible()
    # Nothing answers SSH on this node: the step fails, live, and the job says why.
    job = card.locator(".job").first
    await expect(job.locator(".step[data-step='connect']")).to_have_attribute(
        "data-status", "failed")
    await expect(job.locator(".job-error")).to_contain_text("Connection refused")
    await browsers.shoot("clusters", "#/clusters", "#clusters .step[data-status=failed]")
    assert not browsers.errors, browsers.errors
