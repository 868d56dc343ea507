"""pi-agent on the Pi: its systemd unit and its configuration file."""

from __future__ import annotations

import shlex
from typing import Final

from controller.provision.ssh import Session

UNIT_PATH: Final = "/etc/systemd/system/pi-agent.service"
CONFIG_PATH: Final = "/etc/pi-agent/agent.env"
EXEC: Final = "/opt/pi-agent/bin/pi-agent"

UNIT: Final = """[Unit]
Description=Pi-Controller node agent
Documentation=https://github.com/pi-controller/pi-controller
Wants=network-online.target pigpiod.service
After=network-online.target pigpiod.service

[Service]
Type=exec
EnvironmentFile=-/etc/pi-agent/agent.env
ExecStart=/opt/pi-agent/bin/pi-agent
# SIGTERM: the agent reports itself offline, flushes its outbox, then exits.
KillSignal=SIGTERM
TimeoutStopSec=15
Restart=always
RestartSec=2
# The agent writes nothing to disk (SD cards wear out); keep it that way.
DynamicUser=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
MemoryMax=64M
CPUQuota=25%
# What the agent needs: TCP to Redis and to pigpiod/rgpiod (GPIO goes through the daemon, so
# no device node), UDP multicast for mDNS, netlink to list interfaces, and read access to
# /proc and /sys for health. Everything else is taken away (systemd-analyze security).
PrivateDevices=yes
PrivateMounts=yes
PrivateUsers=yes
DevicePolicy=closed
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RemoveIPC=yes
PrivateIPC=yes
KeyringMode=private
UMask=0077
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @debug
SystemCallFilter=~@cpu-emulation @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""
"""The unit of deploy/systemd/pi-agent.service (a test keeps the two the same)."""


def config(node_id: str, redis_url: str, redis_prefix: str) -> str:
    return (f"PIC_NODE_ID={node_id}\n"
            f"PIC_REDIS_URL={redis_url}\n"
            f"PIC_REDIS_PREFIX={redis_prefix}\n")


async def install(session: Session, *, node_id: str, redis_url: str, redis_prefix: str,
                  install_command: str) -> None:
    # The config holds the Redis URL (maybe with a password): root-only, sent over stdin.
    session.redact.add(redis_url)
    await session.run(f"umask 077 && mkdir -p /etc/pi-agent && cat > {CONFIG_PATH}",
                      sudo=True, stdin=config(node_id, redis_url, redis_prefix))
    await session.run(f"mkdir -p /etc/systemd/system && cat > {UNIT_PATH}", sudo=True,
                      stdin=UNIT)
    await session.run(install_command, sudo=True, timeout=900)
    await session.run(f"test -x {shlex.quote(EXEC)}", sudo=True)
    await session.run("systemctl daemon-reload && systemctl enable pi-agent && "
                      "systemctl restart pi-agent", sudo=True)
    await session.run("systemctl is-active pi-agent", sudo=True)
