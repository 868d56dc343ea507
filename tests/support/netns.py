"""A private LAN of network namespaces: a bridge here, one namespace per fake Pi.

Nothing is routed anywhere: the bridge has no uplink and no namespace a default route, so
multicast (mDNS) and scans stay on this bridge. Every name carries a random suffix, and
``close`` removes what was made (namespaces, links, the processes inside).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.processes import Proc


def skip_unless_netns() -> None:
    """Skip (with the reason) where namespaces cannot be made: not root, no unshare."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run ./scripts/test as root)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net not permitted here: {probe.stderr.decode().strip()}")


def sh(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


class Lan:
    def __init__(self, subnet_octet: int | None = None) -> None:
        self.tag = uuid.uuid4().hex[:6]
        octet = subnet_octet if subnet_octet is not None else 100 + int(self.tag, 16) % 150
        self.prefix = f"10.77.{octet}"
        self.bridge = f"pb{self.tag}"
        self.gateway = f"{self.prefix}.1"
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        # Snooping would hold back multicast until a querier speaks; there is none here.
        sh("ip", "link", "set", self.bridge, "type", "bridge", "mcast_snooping", "0")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        sh("ip", "link", "set", "lo", "up")

    def add(self, host: int, mac: str | None = None) -> tuple[str, str]:
        """A namespace joined to the bridge; returns (namespace, its address)."""
        ns = f"pi{self.tag}-{host}"
        veth = f"v{self.tag}{host}"
        address = f"{self.prefix}.{host}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        if mac:
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns, address

    def run(self, ns: str, args: list[str], log: Path, env: dict[str, str] | None = None
            ) -> Proc:
        proc = Proc(["ip", "netns", "exec", ns, *args], log, env).start()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
