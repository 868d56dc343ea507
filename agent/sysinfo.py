"""What a node is: read from /proc, /sys and /etc/os-release (under a configurable root)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

from common.reports import NodeFacts

_MODEL_FILES = (
    "sys/firmware/devicetree/base/model",
    "proc/device-tree/model",
)


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return None


def read_model(root: Path) -> str:
    for rel in _MODEL_FILES:
        text = _read(root, rel)
        if text:
            return text.rstrip("\x00\n ").strip()
    cpuinfo = _read(root, "proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model", "model name"):
            return value.strip()
    return "unknown"


def read_os(root: Path) -> str:
    text = _read(root, "etc/os-release") or ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return fields.get("PRETTY_NAME", fields.get("NAME", "unknown")).strip('"')


def primary_address() -> str:
    """The address this host would use to reach others; sends nothing (UDP connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def is_raspberry_pi(model: str) -> bool:
    return model.startswith("Raspberry Pi")


def collect(*, node_id: str, sysroot: str = "/", hostname: str = "", address: str = "",
            gpio_backend: str = "") -> NodeFacts:
    root = Path(sysroot)
    host = hostname or socket.gethostname()
    kernel = (_read(root, "proc/sys/kernel/osrelease") or platform.release()).strip()
    return NodeFacts(
        node_id=node_id or host,
        hostname=host,
        ip_address=address or primary_address(),
        model=read_model(root),
        arch=os.uname().machine,
        os=read_os(root),
        kernel=kernel,
        gpio_backend=gpio_backend,
    )
