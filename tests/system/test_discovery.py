"""Discovery with real mDNS traffic between processes in network namespaces.

Agents advertise ``_pi-agent._tcp``; avahi-daemon announces ``_ssh._tcp`` and
``_workstation._tcp`` as a stock Raspberry Pi OS does; a broken advertiser sends bad TXT
records and a garbage packet. The controller, browsing only on the bridge, must find each
machine once, across sources and across its own restart, and report the garbage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import events
from tests.support import processes
from tests.support.netns import Lan, skip_unless_netns
from tests.support.streams import stream_events
from tests.support.waiting import wait_until
from tests.system import lab

pytestmark = pytest.mark.netns

PI_MAC = "dc:a6:32:01:02:03"
PI_MAC_B = "e4:5f:01:0a:0b:0c"
OTHER_MAC = "02:11:22:33:44:55"


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Lan]:
    skip_unless_netns()
    net = Lan()
    try:
        yield net
    finally:
        net.close()


def discovered(stream: list[events.Event]) -> Counter[str]:
    return Counter(e.node_id or "" for e in stream if e.type == events.NODE_DISCOVERED)


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_agents_and_stock_pis_are_discovered_once_across_restart(
        lan: Lan, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    if not lab.have_avahi():
        pytest.skip("avahi-daemon is not installed")
    redis = lab.LabRedis(lan, tmp_path / "redis")
    await redis.wait()
    ns_a, ip_a = lan.add(11)
    ns_b, ip_b = lan.add(12, mac=PI_MAC_B)
    ns_stock, ip_stock = lan.add(13, mac=PI_MAC)
    ns_nas, _ = lan.add(14, mac=OTHER_MAC)
    ns_bad, ip_bad = lan.add(15)
    # pi-b runs both an agent and avahi: two sources, one machine.
    lab.agent(lan, ns_a, ip_a, "pi-a", redis.lan_url, tmp_path / "a.log")
    lab.agent(lan, ns_b, ip_b, "pi-b", redis.lan_url, tmp_path / "b.log")
    lab.avahi(lan, ns_b, "pi-b", tmp_path / "avahi-b")
    stock = lab.avahi(lan, ns_stock, "raspberrypi", tmp_path / "avahi-stock")
    lab.avahi(lan, ns_nas, "nas", tmp_path / "avahi-nas")
    lab.bad_advertiser(lan, ns_bad, ip_bad, tmp_path / "bad.log")

    extra = ["--discovery", "--discovery-interfaces", lan.gateway, "--lease-ttl", "1"]
    ctl = processes.controller(redis.url, tmp_path / "ctl.log", extra=extra).start()
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]

        async def all_found() -> bool:
            found = discovered(await stream_events(redis.url))
            return {"pi-a", "pi-b", "raspberrypi"} <= set(found)

        await wait_until(all_found, 30, interval=0.2, what="node.discovered for every Pi")
        base = ctl.url  # type: ignore[attr-defined]
        stock_node = await get(http, f"{base}/api/v1/nodes/raspberrypi")
        assert stock_node["status"] == "discovered"
        assert stock_node["ip_address"] == ip_stock
        assert stock_node["mac"] == PI_MAC
        agent_node = await get(http, f"{base}/api/v1/nodes/pi-a")
        assert agent_node["status"] == "ready"
        assert agent_node["ip_address"] == ip_a
        first = next(e for e in await stream_events(redis.url)
                 if e.type == events.NODE_DISCOVERED and e.node_id == "raspberrypi")
        assert first.data["ip_address"] == ip_stock
        assert first.data["hostname"] == "raspberrypi"
        assert first.data["source"].startswith("mdns:")

        async def problems_and_nas() -> dict[str, Any] | None:
            view = await get(http, f"{base}/api/v1/discovery")
            reasons = " | ".join(p["reason"] for p in view["problems"])
            nas = [h for h in view["hosts"] if h["hostname"] == "nas"]
            if "not UTF-8" in reasons and "not a node id" in reasons and "missing" in reasons \
                    and nas:
                return view
            return None

        view = await wait_until(problems_and_nas, 20, interval=0.2,
                                what="bad records and the NAS in /api/v1/discovery")
        nas = next(h for h in view["hosts"] if h["hostname"] == "nas")
        assert nas["raspberry_pi"] is False and nas["node_id"] == ""
        stock_host = next(h for h in view["hosts"] if h["hostname"] == "raspberrypi")
        assert stock_host["evidence"] in (f"MAC vendor prefix {PI_MAC[:8]}",
                                          "hostname 'raspberrypi'")
        assert "nas" not in {n["id"] for n in (await get(http, f"{base}/api/v1/nodes"))["items"]}

        # Restart the controller: it sees every record again, and announces nobody twice.
        ctl.stop()
        restarted_at = time.time()
        ctl.start()
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]

        async def seen_again() -> bool:
            view = await get(http, f"{base}/api/v1/discovery")
            fresh = {h["hostname"] for h in view["hosts"] if h["last_seen"] > restarted_at}
            return {"pi-a", "pi-b", "raspberrypi", "nas"} <= fresh

        await wait_until(seen_again, 30, interval=0.2, what="records seen after the restart")
        counts = discovered(await stream_events(redis.url))
        assert counts == Counter({"pi-a": 1, "pi-b": 1, "raspberrypi": 1}), counts
        assert stock.running
    finally:
        ctl.stop()
        redis.stop()
    assert "Traceback" not in ctl.log()


async def test_manual_registration_and_subnet_scan(
        lan: Lan, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    if not lab.have_sshd():
        pytest.skip("openssh-server is not installed")
    redis = lab.LabRedis(lan, tmp_path / "redis")
    await redis.wait()
    ns_pi, ip_pi = lan.add(21, mac=PI_MAC)
    ns_box, ip_box = lan.add(22, mac=OTHER_MAC)
    lab.sshd(lan, ns_pi, ip_pi, tmp_path / "sshd-pi")
    lab.sshd(lan, ns_box, ip_box, tmp_path / "sshd-box")
    silent = f"{lan.prefix}.99"  # nobody there

    extra = ["--scan-subnet", f"{lan.prefix}.0/24", "--ssh-probe-timeout", "0.5",
             "--lease-ttl", "1"]
    ctl = processes.controller(redis.url, tmp_path / "ctl.log", extra=extra).start()
    base = ctl.url  # type: ignore[attr-defined]
    try:
        await processes.wait_ready(base, ctl)

        async def scanned() -> bool:
            return any(e.data.get("source") == "scan" for e in await stream_events(redis.url)
                       if e.type == events.NODE_DISCOVERED)

        await wait_until(scanned, 30, interval=0.2, what="the scan to find the Pi")
        found = [e for e in await stream_events(redis.url) if e.type == events.NODE_DISCOVERED]
        assert [(e.data["ip_address"], e.data["source"]) for e in found] == [(ip_pi, "scan")]
        scanned_id = found[0].node_id

        # The box answers SSH but nothing says Pi: listed for the operator, not a node.
        view = await get(http, f"{base}/api/v1/discovery")
        box = next(h for h in view["hosts"] if h["address"] == ip_box)
        assert box["raspberry_pi"] is False
        assert box["mac"] == OTHER_MAC

        # By hand: the same machine again is recognised (by MAC and address), no new event.
        async with http.post(f"{base}/api/v1/nodes", json={"address": ip_pi}) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["created"] is False and body["node"]["id"] == scanned_id
        assert body["ssh"]["reachable"] is True
        assert body["ssh"]["banner"].startswith("SSH-2.0-")

        # The box, by hand: a node now, since the operator says so.
        async with http.post(f"{base}/api/v1/nodes",
                             json={"address": ip_box, "name": "box-1"}) as response:
            assert response.status == 201, await response.text()
            body = await response.json()
        assert body["node"]["id"] == "box-1" and body["node"]["status"] == "discovered"
        assert body["node"].get("error", "") == ""

        # An address that does not answer: recorded, with the error; never a 500.
        async with http.post(f"{base}/api/v1/nodes", json={"address": silent}) as response:
            assert response.status == 201, await response.text()
            body = await response.json()
        assert body["ssh"]["reachable"] is False
        assert body["node"].get("error") and body["node"]["status"] == "discovered"
        view = await get(http, f"{base}/api/v1/discovery")
        assert any(p["subject"] == silent for p in view["problems"])

        counts = discovered(await stream_events(redis.url))
        assert sorted(counts.values()) == [1, 1, 1], counts
    finally:
        ctl.stop()
        redis.stop()
    assert "Traceback" not in ctl.log()


async def test_agent_advertises_and_says_goodbye_on_stop(lan: Lan, tmp_path: Path) -> None:
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    redis = lab.LabRedis(lan, tmp_path / "redis")
    await redis.wait()
    ns, ip = lan.add(31)
    changes: list[tuple[str, ServiceStateChange]] = []
    azc = AsyncZeroconf(interfaces=[lan.gateway], ip_version=IPVersion.V4Only)

    def on_change(zeroconf: object, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        changes.append((name, state_change))

    browser = AsyncServiceBrowser(azc.zeroconf, ["_pi-agent._tcp.local."],
                                  handlers=[on_change])
    pi = lab.agent(lan, ns, ip, "pi-adv", redis.lan_url, tmp_path / "agent.log")
    try:
        name = "pi-adv._pi-agent._tcp.local."
        await wait_until(lambda: (name, ServiceStateChange.Added) in changes, 20,
                         what="the agent's record")
        info = AsyncServiceInfo("_pi-agent._tcp.local.", name)
        assert await info.async_request(azc.zeroconf, 3000)
        assert info.parsed_addresses(IPVersion.V4Only) == [ip]
        assert info.properties[b"node_id"] == b"pi-adv"
        assert info.properties[b"arch"] and info.properties[b"version"]
        pi.stop()
        await wait_until(lambda: (name, ServiceStateChange.Removed) in changes, 10,
                         what="the goodbye packet")
    finally:
        pi.kill()
        await browser.async_cancel()
        await azc.async_close()
        redis.stop()
