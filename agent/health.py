"""Health: CPU, memory, disk, load, temperature, throttling, uptime and addresses.

Read from /proc and /sys (under the configurable sysroot) with no extra dependency and no
disk writes; reported every ``health_interval``. The controller checks each report, keeps a
bounded history of them and announces it as ``node.health.reported``.

Throttling comes from the firmware's ``get_throttled`` in sysfs where the kernel exposes it,
else from ``vcgencmd get_throttled``; neither exists off a Pi, and the fields are then null.
Bits (Raspberry Pi documentation): 0 under-voltage now, 1 ARM frequency capped now,
2 throttled now, 3 soft temperature limit now; 16-19 the same "has occurred since boot".
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import os
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any

from agent.outbox import Outbox
from common import reports

logger = logging.getLogger(__name__)

THROTTLED_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"
THERMAL = "sys/class/thermal"
VCGENCMD_TIMEOUT = 2.0
_SIOCGIFADDR = 0x8915

_BITS = {
    "under_voltage": 0, "freq_capped": 1, "throttled": 2, "soft_temp_limit": 3,
    "under_voltage_occurred": 16, "freq_capped_occurred": 17, "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def cpu_times(root: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies since boot from the first line of /proc/stat."""
    text = _read(root / "proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    try:
        values = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    except ValueError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


def memory(root: Path) -> dict[str, Any]:
    text = _read(root / "proc/meminfo") or ""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    total = fields.get("MemTotal")
    available = fields.get("MemAvailable", fields.get("MemFree"))
    if not total or available is None:
        return {"memory_total_bytes": None, "memory_available_bytes": None,
                "memory_percent": None}
    return {"memory_total_bytes": total, "memory_available_bytes": available,
            "memory_percent": round(100.0 * (total - available) / total, 1)}


def disk(path: Path) -> dict[str, Any]:
    try:
        st = os.statvfs(path)
    except OSError:
        return {"disk_total_bytes": None, "disk_free_bytes": None, "disk_percent": None}
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    # As df computes it: the blocks reserved for root count as neither used nor available.
    percent = round(100.0 * used / (used + free), 1) if used + free else None
    return {"disk_total_bytes": total, "disk_free_bytes": free, "disk_percent": percent}


def load(root: Path) -> dict[str, Any]:
    text = _read(root / "proc/loadavg") or ""
    parts = text.split()
    try:
        one, five, fifteen = (float(p) for p in parts[:3])
    except ValueError:
        return {"load_1": None, "load_5": None, "load_15": None}
    return {"load_1": one, "load_5": five, "load_15": fifteen}


def uptime(root: Path) -> float | None:
    text = _read(root / "proc/uptime") or ""
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def cpu_temperature(root: Path) -> float | None:
    """Degrees C of the CPU's thermal zone (the one typed *cpu*/soc, else the first)."""
    zones = sorted((root / THERMAL).glob("thermal_zone*"))
    if not zones:
        return None
    preferred = [z for z in zones
                 if any(k in (_read(z / "type") or "").lower() for k in ("cpu", "soc"))]
    for zone in preferred or zones:
        text = _read(zone / "temp")
        if text is None:
            continue
        try:
            return round(int(text.strip()) / 1000.0, 1)
        except ValueError:
            continue
    return None


def parse_throttled(text: str) -> int | None:
    """``throttled=0x50005`` (vcgencmd) or ``50005`` (sysfs, hex) -> the bit field."""
    value = text.strip().rpartition("=")[2]
    try:
        return int(value, 16)
    except ValueError:
        return None


def throttled_fields(bits: int | None) -> dict[str, Any]:
    if bits is None:
        return {"throttled_flags": None, **dict.fromkeys(_BITS)}
    return {"throttled_flags": hex(bits),
            **{name: bool(bits >> bit & 1) for name, bit in _BITS.items()}}


async def read_throttled(root: Path, vcgencmd: str | None) -> int | None:
    text = _read(root / THROTTLED_SYSFS)
    if text is not None:
        return parse_throttled(text)
    if vcgencmd is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            vcgencmd, "get_throttled", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(VCGENCMD_TIMEOUT):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError):
        return None
    return parse_throttled(out.decode(errors="replace"))


def addresses() -> dict[str, list[str]]:
    """IPv4 address of each interface that has one (SIOCGIFADDR), loopback left out."""
    found: dict[str, list[str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            if name == "lo":
                continue
            request = array.array("B", struct.pack("256s", name.encode()[:15]))
            try:
                fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue
            found[name] = [socket.inet_ntoa(request.tobytes()[20:24])]
    return found


class HealthCollector:
    def __init__(self, sysroot: str = "/") -> None:
        self._root = Path(sysroot)
        self._vcgencmd = shutil.which("vcgencmd")
        self._last_cpu = cpu_times(self._root)

    def _cpu_percent(self) -> float | None:
        now = cpu_times(self._root)
        last, self._last_cpu = self._last_cpu, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return round(100.0 * (now[0] - last[0]) / (now[1] - last[1]), 1)

    async def collect(self) -> dict[str, Any]:
        root = self._root
        return {
            "time": round(time.time(), 3),
            "cpu_percent": self._cpu_percent(),
            **memory(root),
            **disk(root),
            **load(root),
            "cpu_temp_c": cpu_temperature(root),
            **throttled_fields(await read_throttled(root, self._vcgencmd)),
            "uptime_s": uptime(root),
            "addresses": addresses(),
        }


class HealthReporter:
    """Publishes a report every interval; the first soon after start, to fill the UI."""

    def __init__(self, collector: HealthCollector, outbox: Outbox, *, interval: float) -> None:
        self._collector = collector
        self._outbox = outbox
        self._interval = interval

    async def report(self) -> None:
        self._outbox.emit(reports.Health(metrics=await self._collector.collect()))

    async def run(self) -> None:
        await asyncio.sleep(min(1.0, self._interval))
        while True:
            await self.report()
            await asyncio.sleep(self._interval)
