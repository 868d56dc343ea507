"""mDNS advertisement: this agent announces itself as ``_pi-agent._tcp`` on the LAN.

TXT records carry what the controller needs to recognise the machine before it reads Redis:
``node_id``, ``version`` (agent), ``model`` and ``arch``. Interfaces are configurable (an
address or an interface name each); tests and the demo keep it to loopback or a namespace.
The service is unregistered (a goodbye packet) when the task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from common.reports import NodeFacts

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_pi-agent._tcp.local."
PORT = 0
"""The agent listens on nothing: the record says "a pi-agent runs here", nothing more."""
TXT_MAX = 200
"""A TXT string holds 255 bytes with its key; long models are cut rather than refused."""


def interface_addresses(interfaces: Sequence[str]) -> list[str]:
    """Addresses for the given interface names or addresses (names resolved via ioctl)."""
    from agent.health import addresses

    by_name = addresses()
    resolved: list[str] = []
    for item in interfaces:
        if item in by_name:
            resolved += by_name[item]
        else:
            resolved.append(item)
    return resolved


def service_info(facts: NodeFacts, addresses: Sequence[str]) -> ServiceInfo:
    name = f"{facts.node_id}.{SERVICE_TYPE}"
    properties = {
        "node_id": facts.node_id,
        "version": facts.agent_version,
        "model": facts.model[:TXT_MAX],
        "arch": facts.arch,
        "hostname": facts.hostname,
    }
    return ServiceInfo(
        SERVICE_TYPE, name, port=PORT, properties=properties,
        server=f"{facts.hostname}.local.",
        addresses=[socket.inet_aton(a) for a in addresses if _is_ipv4(a)],
    )


def _is_ipv4(address: str) -> bool:
    try:
        socket.inet_aton(address)
    except OSError:
        return False
    return address.count(".") == 3


class Advertiser:
    def __init__(self, facts: NodeFacts, interfaces: Sequence[str]) -> None:
        self._facts = facts
        self._interfaces = list(interfaces)

    async def run(self) -> None:
        if self._interfaces:
            addresses = interface_addresses(self._interfaces)
            choice: list[str] | InterfaceChoice = addresses
        else:
            addresses = [self._facts.ip_address]
            choice = InterfaceChoice.All
        info = service_info(self._facts, addresses)
        zc = AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
        try:
            # A name already taken (a second agent with the same node id) is renamed by
            # zeroconf rather than refused: both stay visible and the controller sees the
            # clash through the equal node_id TXT.
            announced = await zc.async_register_service(info, allow_name_change=True)
            await announced
            logger.info("advertising %s on %s", info.name, ", ".join(addresses))
            await asyncio.Event().wait()
        finally:
            # Sends the goodbye packets, so browsers drop the record at once, not at its TTL.
            await asyncio.shield(zc.async_close())
