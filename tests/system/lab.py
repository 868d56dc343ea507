"""Fake Pis in namespaces: Redis on the bridge, agents, avahi like Raspberry Pi OS, sshd."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import redis.asyncio as aioredis

from tests.support import processes
from tests.support.netns import Lan
from tests.support.processes import Proc
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

SSH_SERVICE = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group><name replace-wildcards="yes">%h</name>
<service><type>_ssh._tcp</type><port>22</port></service></service-group>
"""
# As Raspberry Pi OS ships avahi, minus D-Bus (nothing here asks avahi over D-Bus).
AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=no
[wide-area]
enable-wide-area=no
[publish]
publish-workstation=yes
publish-addresses=yes
publish-hinfo=no
"""


class LabRedis:
    """A redis-server reachable from the namespaces (bridge address) and from here."""

    def __init__(self, lan: Lan, directory: Path) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = Proc([shutil.which("redis-server") or "redis-server", "--port",
                          str(self.port), "--bind", "127.0.0.1", lan.gateway, "--save", "",
                          "--protected-mode", "no", "--dir", str(directory)],
                         directory / "redis.log").start()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.lan_url = f"redis://{lan.gateway}:{self.port}/0"

    async def wait(self) -> None:
        async def pong() -> bool:
            client = aioredis.Redis.from_url(self.url)
            try:
                return bool(await client.ping())
            except OSError:
                return False
            except aioredis.ConnectionError:
                return False
            finally:
                await client.aclose()

        await wait_until(pong, 10, what="lab redis")

    def stop(self) -> None:
        self.proc.kill()



def agent(lan: Lan, ns: str, address: str, node_id: str, redis_url: str, log: Path,
          extra: list[str] | None = None) -> Proc:
    proc = processes.agent(redis_url, node_id, log, extra=[
        "--address", address, "--mdns", "--mdns-interfaces", address,
        "--heartbeat-interval", "0.2", *(extra or [])])
    proc.prepare()
    return lan.run(ns, proc.args, log)


def avahi(lan: Lan, ns: str, hostname: str, directory: Path) -> Proc:
    """avahi-daemon announcing _ssh._tcp and _workstation._tcp, as a stock Pi does."""
    services = directory / "services"
    services.mkdir(parents=True, exist_ok=True)
    (services / "ssh.service").write_text(SSH_SERVICE)
    (directory / "avahi.conf").write_text(AVAHI_CONF)
    script = (f"hostname {hostname} && mkdir -p /run/avahi-daemon && "
              "mount -t tmpfs none /run/avahi-daemon && "
              f"mount --bind {services} /etc/avahi/services && "
              f"exec avahi-daemon -f {directory}/avahi.conf --no-drop-root --no-chroot "
              "--no-rlimits")
    return lan.run(ns, ["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c",
                        script], directory / "avahi.log")


def sshd(lan: Lan, ns: str, address: str, directory: Path) -> Proc:
    directory.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(directory / "host_key"))
    (directory / "host_key").chmod(0o600)
    (directory / "sshd_config").write_text(
        f"Port 22\nListenAddress {address}\nHostKey {directory}/host_key\nPidFile none\n"
        "PasswordAuthentication no\nUsePAM no\nStrictModes no\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    return lan.run(ns, ["/usr/sbin/sshd", "-D", "-e", "-f", str(directory / "sshd_config")],
                   directory / "sshd.log")


def bad_advertiser(lan: Lan, ns: str, address: str, log: Path) -> Proc:
    script = Path(__file__).with_name("bad_advertiser.py")
    return lan.run(ns, [sys.executable, str(script), address], log)


def have_avahi() -> bool:
    return shutil.which("avahi-daemon") is not None


def have_sshd() -> bool:
    return Path("/usr/sbin/sshd").exists()


def run_ok(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)
