"""Preflight ("doctor"): what the host is, and whether K3s can run on it.

The facts come from one shell script (no Python needed on the Pi). Checks that fail stop
the job with every problem listed at once; warnings are kept in the step's output.
Memory cgroups are a separate step because they have a fix (cmdline.txt and a reboot).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

FACTS_SCRIPT = r"""
model=$(tr -d '\000' < /sys/firmware/devicetree/base/model 2>/dev/null \
  || tr -d '\000' < /proc/device-tree/model 2>/dev/null \
  || sed -n 's/^Model[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "model=$model"
echo "arch=$(uname -m)"
echo "hostname=$(hostname)"
( . /etc/os-release 2>/dev/null; echo "os_id=$ID"; echo "os_like=$ID_LIKE";
  echo "os_version=$VERSION_ID"; echo "os_name=$PRETTY_NAME" )
echo "mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
echo "disk_kb=$(df -Pk /var/lib 2>/dev/null | awk 'NR==2{print $4}')"
echo "clock=$(date +%s.%N)"
echo "ntp=$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
echo "cmdline=$(cat /proc/cmdline)"
echo "cgroup_memory=$(awk '$1=="memory"{print $4}' /proc/cgroups 2>/dev/null)"
for f in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
  if [ -f "$f" ]; then echo "cmdline_txt=$f"; break; fi
done
echo "k3s_url=$(sudo -n cat /etc/systemd/system/k3s-agent.service.env \
  /etc/systemd/system/k3s.service.env 2>/dev/null | sed -n 's/^K3S_URL=//p' | tr -d "'\"" \
  | head -n1)"
echo "server_token_sha256=$(sudo -n cat /var/lib/rancher/k3s/server/node-token 2>/dev/null \
  | tr -d '\n' | sha256sum | cut -c1-64)"
"""

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MIN_MEMORY_KB = 512 * 1024
SERVER_MEMORY_KB = 1024 * 1024
MIN_DISK_KB = 2 * 1024 * 1024
MAX_CLOCK_SKEW = 30.0
"""Seconds; beyond this, K3s's TLS certificates look not-yet-valid or expired."""
SUPPORTED_OS = ("debian", "raspbian", "ubuntu")
CGROUP_FLAGS = ("cgroup_memory=1", "cgroup_enable=memory")


def parse_facts(output: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            facts[key] = value.strip()
    return facts


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def memory_cgroup_enabled(cmdline: str, cgroup_memory: str) -> bool:
    """The kernel's view: the last of cgroup_disable/cgroup_enable=memory on the command
    line wins (Raspberry Pi kernels put cgroup_disable=memory in front by default)."""
    enabled = cgroup_memory != "0"
    for word in cmdline.split():
        if word == "cgroup_disable=memory":
            enabled = False
        elif word == "cgroup_enable=memory":
            enabled = True
    return enabled


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"  ok    {p}" for p in self.passed]
        lines += [f"  warn  {w}" for w in self.warnings]
        lines += [f"  FAIL  {f}" for f in self.failures]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Expectations:
    role: str
    arches: tuple[str, ...]
    require_pi: bool
    server_url: str
    """The URL this node will join; empty for the cluster's first server."""
    cluster_token_sha256: str
    """Of the cluster's token, once its first server has one; empty before."""
    other_hostnames: dict[str, str]
    """Hostname (lower case) -> node id of the cluster's other members."""


def check(facts: dict[str, str], want: Expectations, *, sent_at: float, received_at: float
          ) -> Report:
    r = Report()
    model = facts.get("model", "")
    if model.startswith("Raspberry Pi"):
        r.passed.append(f"model: {model}")
    elif want.require_pi:
        r.failures.append(f"not a Raspberry Pi (model {model or 'unknown'!r})")
    else:
        r.warnings.append(f"not a Raspberry Pi (model {model or 'unknown'!r})")

    arch = facts.get("arch", "")
    if arch in want.arches:
        r.passed.append(f"architecture: {arch}")
    else:
        r.failures.append(f"unsupported architecture {arch!r} (supported: "
                          f"{', '.join(want.arches)})")

    os_ids = {facts.get("os_id", ""), *facts.get("os_like", "").split()}
    os_name = facts.get("os_name") or facts.get("os_id") or "unknown"
    if os_ids & set(SUPPORTED_OS):
        r.passed.append(f"OS: {os_name}")
    else:
        r.failures.append(f"unsupported OS {os_name!r} (needs Raspberry Pi OS, Debian or "
                          "Ubuntu)")

    mem_kb = _int(facts.get("mem_kb"))
    if mem_kb < MIN_MEMORY_KB:
        r.failures.append(f"memory {mem_kb // 1024} MB is below the 512 MB K3s needs")
    elif want.role == "server" and mem_kb < SERVER_MEMORY_KB:
        r.warnings.append(f"memory {mem_kb // 1024} MB: a K3s server wants 1 GB or more")
    else:
        r.passed.append(f"memory: {mem_kb // 1024} MB")

    disk_kb = _int(facts.get("disk_kb"))
    if disk_kb < MIN_DISK_KB:
        r.failures.append(f"only {disk_kb // 1024} MB free under /var/lib; K3s needs 2 GB")
    else:
        r.passed.append(f"free disk under /var/lib: {disk_kb // 1024 // 1024} GB")

    remote = _float(facts.get("clock"))
    midpoint = (sent_at + received_at) / 2
    skew = abs(remote - midpoint) if remote else float("inf")
    if skew > MAX_CLOCK_SKEW:
        r.failures.append(
            f"clock is off by {skew:.0f}s from the controller's; K3s certificates would not "
            "validate (enable NTP: timedatectl set-ntp true)")
    elif facts.get("ntp") == "no":
        r.warnings.append(f"clock within {skew:.1f}s but NTP is not synchronised")
    else:
        r.passed.append(f"clock within {skew:.1f}s of the controller's")

    hostname = facts.get("hostname", "").lower()
    twin = want.other_hostnames.get(hostname)
    if twin:
        r.failures.append(f"hostname {hostname!r} is also node {twin!r} of this cluster; K3s "
                          "needs unique node names (sudo hostnamectl set-hostname NEW)")
    elif hostname:
        r.passed.append(f"hostname {hostname!r} is unique in the cluster")

    joined = facts.get("k3s_url", "")
    if joined and joined.rstrip("/") != want.server_url.rstrip("/"):
        r.failures.append(f"already a K3s agent of another cluster ({joined}); remove it "
                          "there first (k3s-agent-uninstall.sh)")
    server_sha = facts.get("server_token_sha256", "")
    if server_sha and server_sha != EMPTY_SHA256 and not joined and (
            not want.cluster_token_sha256 or server_sha != want.cluster_token_sha256):
        r.failures.append("already a K3s server of another cluster; remove it there first "
                          "(k3s-uninstall.sh)")
    return r


def clock_now() -> float:
    return time.time()


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
