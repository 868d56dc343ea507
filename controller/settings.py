"""The controller's settings (``PIC_*`` variables or flags of ``pi-controller serve``)."""

from __future__ import annotations

import dataclasses

from common.settings import LoggingSettings, RedisSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControllerSettings(RedisSettings, LoggingSettings):
    host: str = setting("127.0.0.1", "address to listen on; 0.0.0.0 to serve the LAN")
    port: int = setting(8080, "HTTP port for REST, the UI and /ws")
    admin_token: str = setting("", "bootstrap admin API token, stored hashed", secret=True)
    allowed_origins: list[str] = setting(
        [], "extra Origins allowed on /ws besides the controller's own host")
    session_ttl: int = setting(7 * 24 * 3600, "seconds a UI login session lasts")
    stream_maxlen: int = setting(100_000, "events kept in the stream, at most (approximate)")
    stream_max_age: float = setting(7 * 24 * 3600.0, "seconds an event is kept in the stream, "
                                    "at most; resuming from older gives ws.resync")
    ws_heartbeat: float = setting(25.0, "seconds between WebSocket pings; a peer that misses "
                                  "the pong is closed")
    ws_soft_buffer: int = setting(256 * 1024, "bytes queued to a client before its updates are "
                                  "coalesced (latest state per key)")
    ws_hard_buffer: int = setting(4 * 1024 * 1024, "bytes queued to a client before it is "
                                  "closed with 4008 (it may resume with since)")
    ws_max_message: int = setting(64 * 1024, "largest client message accepted, in bytes")
    heartbeat_interval: float = setting(5.0, "seconds between agent heartbeats (liveness)")
    missed_heartbeats: int = setting(3, "missed heartbeats before a node is marked offline")
    lease_ttl: float = setting(10.0, "seconds a singleton-duty lease lasts without renewal")
    discovery: bool = setting(False, "browse mDNS for agents and stock Raspberry Pi OS hosts")
    discovery_interfaces: list[str] = setting([], "interfaces/addresses to browse on; the demo "
                                              "uses 127.0.0.1")
    scan_subnet: str = setting("", "CIDR to scan for SSH (port 22), e.g. 192.168.1.0/24; "
                               "empty = no scan")
    state_dir: str = setting("", "directory for the controller's SSH key and known hosts")
    scan_interval: float = setting(600.0, "seconds between subnet SSH scans; rare, a scan "
                                   "touches every address of the subnet")
    scan_max_hosts: int = setting(1024, "largest subnet scanned (addresses); a /22 at most "
                                  "by default, so a typo cannot sweep a /8")
    ssh_probe_timeout: float = setting(2.0, "seconds to wait for a manually registered or "
                                       "scanned address to accept on port 22")
    health_temp_warning: float = setting(80.0, "CPU temperature in degrees C that raises a "
                                         "warning; the Pi firmware soft-throttles from 80")
    health_temp_hysteresis: float = setting(5.0, "degrees C below the warning temperature "
                                            "before the recovery message, so it cannot flap")
    health_disk_warning: float = setting(90.0, "root file system use in percent that raises "
                                         "a warning")
