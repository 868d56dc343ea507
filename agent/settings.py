"""The agent's settings (``PIC_*`` variables or flags of ``pi-agent``)."""

from __future__ import annotations

import dataclasses

from common.settings import LoggingSettings, RedisSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentSettings(RedisSettings, LoggingSettings):
    node_id: str = setting("", "this node's id; defaults to the hostname")
    gpio: str = setting("sim", "GPIO backend: sim, pigpio or rgpio", env="PIC_GPIO_BACKEND")
    pigpio_host: str = setting("127.0.0.1", "pigpiod host; keep pigpiod on localhost, it has "
                               "no authentication")
    pigpio_port: int = setting(8888, "pigpiod port")
    rgpio_host: str = setting("127.0.0.1", "rgpiod host (Raspberry Pi 5)")
    rgpio_port: int = setting(8889, "rgpiod port")
    rgpio_chip: int = setting(0, "gpiochip of the 40-pin header: 0 on a Pi 5 with kernel "
                              "6.6.45 or later, 4 before")
    heartbeat_interval: float = setting(5.0, "seconds between heartbeats")
    health_interval: float = setting(30.0, "seconds between health reports; low, to spare "
                                     "the SD card and the network")
    reconcile_interval: float = setting(60.0, "seconds between re-applying declared pin "
                                        "states (drift correction)")
    failsafe_after: float = setting(10.0, "seconds without Redis before pins with a safeState "
                                    "are driven to it")
    outbox_size: int = setting(10_000, "events kept while Redis is unreachable; the oldest "
                               "are dropped (and counted) beyond this")
    sim_input_interval: float = setting(0.0, "sim backend: seconds between random changes "
                                        "of input pins (0 = never; the demo uses it)")
    sysroot: str = setting("/", "root under which /proc, /sys and /etc are read (tests)")
    hostname: str = setting("", "override the reported hostname (tests)")
    address: str = setting("", "override the reported IP address")
    mdns: bool = setting(False, "advertise this agent over mDNS as _pi-agent._tcp")
    mdns_interfaces: list[str] = setting([], "interfaces/addresses to advertise on "
                                         "(empty: all); the demo uses 127.0.0.1")
