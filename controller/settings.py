"""The controller's settings (``PIC_*`` variables or flags of ``pi-controller serve``)."""

from __future__ import annotations

import dataclasses

from common.settings import LoggingSettings, RedisSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControllerSettings(RedisSettings, LoggingSettings):
    host: str = setting("127.0.0.1", "address to listen on; 0.0.0.0 to serve the LAN")
    port: int = setting(8080, "HTTP port for REST, the UI and /ws")
    metrics_allow: list[str] = setting(
        [], "addresses or CIDRs that may read /metrics without a token (Prometheus on the "
        "same host, say); everyone else needs a token of any role")
    http_idle_timeout: float = setting(
        15.0, "seconds a connection may take to send a request's headers, or stay idle "
        "between requests, before it is closed (half-sent requests cannot pile up)")
    tls_cert: str = setting("", "certificate chain (PEM) to serve HTTPS and WSS with; needs "
                            "--tls-key")
    tls_key: str = setting("", "private key (PEM) of --tls-cert")
    trusted_proxies: list[str] = setting(
        [], "reverse proxies (addresses or CIDRs) whose X-Forwarded-Proto and X-Forwarded-For "
        "are believed; nobody else's are")
    admin_token: str = setting("", "bootstrap admin API token, stored hashed", secret=True)
    allowed_origins: list[str] = setting(
        [], "extra Origins allowed on /ws besides the controller's own host")
    session_ttl: int = setting(7 * 24 * 3600, "seconds a UI login session lasts")
    stream_maxlen: int = setting(100_000, "events kept in the stream, at most (approximate)")
    stream_max_age: float = setting(7 * 24 * 3600.0, "seconds an event is kept in the stream, "
                                    "at most; resuming from older gives ws.resync")
    redis_min_replicas: int = setting(0, "replicas that must confirm GPIO, token and cluster "
                                      "writes (WAIT) before they are answered; 0: do not wait")
    redis_replica_timeout: float = setting(0.5, "seconds to wait for those replicas; fewer in "
                                           "time is a 503 (the write is on the primary only)")
    ws_heartbeat: float = setting(25.0, "seconds between WebSocket pings; a peer that misses "
                                  "the pong is closed")
    ws_soft_buffer: int = setting(256 * 1024, "bytes queued to a client before its updates are "
                                  "coalesced (latest state per key)")
    ws_hard_buffer: int = setting(4 * 1024 * 1024, "bytes queued to a client before it is "
                                  "closed with 4008 (it may resume with since)")
    ws_max_message: int = setting(64 * 1024, "largest client message accepted, in bytes")
    ws_max_rate: float = setting(20.0, "messages a /ws client may send per second (a burst of "
                                 "five seconds' worth is allowed)")
    ws_max_per_token: int = setting(500, "open /ws connections per token (its login sessions "
                                    "included), per controller replica")
    heartbeat_interval: float = setting(5.0, "seconds between agent heartbeats (liveness)")
    missed_heartbeats: int = setting(3, "missed heartbeats before a node is marked offline")
    lease_ttl: float = setting(10.0, "seconds a singleton-duty lease lasts without renewal")
    metrics_history: int = setting(120, "health reports kept per node (one hour at the "
                                   "agents' default 30 s interval)")
    agent_redis_address: str = setting(
        "", "host:port at which the Pis reach Redis, put in the credentials issued to agents; "
        "default: the host and port of the controller's own Redis URL")
    agent_max_rate: float = setting(
        200.0, "reports per second one agent may send on average; past it (and a burst of "
        "10 s of that rate) its reports are dead-lettered, so one Pi cannot flood the rest")
    ingest_batch: int = setting(256, "agent reports applied in one Redis transaction, at most")
    ingest_shards: int = setting(4, "shards the agents' reports are read in, each under a lease "
                                 "of its own, so that controller replicas share the work; a "
                                 "node's reports always go to one shard, in order")
    discovery: bool = setting(False, "browse mDNS for agents and stock Raspberry Pi OS hosts")
    discovery_interfaces: list[str] = setting([], "interfaces/addresses to browse on; the demo "
                                              "uses 127.0.0.1")
    node_networks: list[str] = setting(
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
         "127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128"],
        "networks Pis may be registered, scanned and provisioned in (CIDRs); the controller "
        "contacts no address outside them")
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
    ssh_user: str = setting("pi", "user the controller logs in as on a Pi; it must have "
                            "passwordless sudo, as Raspberry Pi OS sets up")
    ssh_port: int = setting(22, "SSH port of the Pis")
    ssh_connect_timeout: float = setting(10.0, "seconds to wait for a Pi to accept an SSH "
                                         "connection before its job fails at 'connect'")
    provision_parallel: int = setting(4, "nodes provisioned at the same time, at most; each "
                                      "one downloads K3s, so this bounds the uplink too")
    provision_arch: list[str] = setting(["aarch64", "arm64", "armv7l"], "machine types the "
                                        "preflight accepts (K3s ships arm64 and armhf)")
    provision_require_pi: bool = setting(True, "refuse hosts whose device-tree model is not "
                                         "a Raspberry Pi")
    k3s_install_source: str = setting("online", "'online' (each Pi fetches the install "
                                      "script) or 'bundle' (air-gap: uploaded over SFTP)")
    k3s_install_url: str = setting("https://get.k3s.io", "install script URL for 'online'")
    k3s_bundle_dir: str = setting("", "for 'bundle': directory with install.sh and the k3s "
                                  "binary (k3s-arm64 / k3s-armhf / k3s), optionally images")
    k3s_ready_timeout: float = setting(300.0, "seconds to wait for a node to be Ready as "
                                       "seen by the server after installing K3s")
    reboot_timeout: float = setting(300.0, "seconds to wait for a Pi to come back after the "
                                    "cgroup fix reboot; a Pi 4 takes about 40")
    agent_install_command: str = setting(
        "test -x /opt/pi-agent/bin/pi-agent || { python3 -m venv /opt/pi-agent && "
        "/opt/pi-agent/bin/pip install --quiet pi-controller; }",
        "shell command run as root on a Pi to install pi-agent at /opt/pi-agent/bin/pi-agent")
