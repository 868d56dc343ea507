"""A real Redis primary with replicas, watched by real Sentinels, all on loopback: for tests
that kill the primary and watch Pi-Controller follow the failover.

    with SentinelSet(tmp_path, password="s3cret") as redis_set:
        url = redis_set.sentinel_url()          # redis+sentinel://:s3cret@127.0.0.1:p1,.../mymaster/0
        old = redis_set.kill_primary()          # SIGKILL, no goodbye
        new_port = redis_set.wait_for_new_primary(old.port)
        redis_set.restart(old)                  # back as it was configured ...
        redis_set.wait_replica_linked(old)      # ... until Sentinel makes it a replica

Every Redis keeps its settings in a config file of its own (``redis.conf`` in its
directory). Sentinel sends CONFIG REWRITE with each REPLICAOF, so a restarted server comes
back in the role it last had, as on a real host: a killed primary comes back as a primary,
and Sentinel turns it into a replica of the new one (about 8 s later: Sentinel waits that
long before it overrides an instance's own view). Each process logs to a file in its
directory; a process that does not start is reported with the tail of its log.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import RedisServer, free_port, kill_process, stop_process

T = TypeVar("T")

POLL_INTERVAL = 0.05
UNREACHABLE: tuple[type[Exception], ...] = (redis.RedisError, OSError)
"""What a probe of a process that is down, starting or busy may raise: seen, not fatal."""


def _quote(value: str) -> str:
    """``value`` as one argument of a Redis config file line."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r"))
    return f'"{escaped}"'


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as err:
        return f"(no log at {log}: {err})"
    return f"--- tail of {log} ---\n{text[-chars:]}"


def _client(port: int, password: str | None = None, timeout: float = 1.0) -> Any:
    """A sync client that answers or fails at once: no retries, no backoff (a poll loop
    does the retrying), str replies."""
    return redis.Redis(host="127.0.0.1", port=port, password=password,
                       socket_connect_timeout=timeout, socket_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def _poll(what: str, probe: Callable[[], tuple[T | None, str]], timeout: float,
          logs: Callable[[], list[Path]] | None = None) -> T:
    """Call ``probe`` until it returns a value (not None) or ``timeout`` passes. ``probe``
    returns (value or None, what it saw); errors of an unreachable process count as seen.
    TimeoutError names ``what`` was awaited, what was last seen and the tail of ``logs``."""
    deadline = time.monotonic() + timeout
    seen = "nothing yet"
    while True:
        try:
            value, seen = probe()
        except UNREACHABLE as err:
            value, seen = None, f"{type(err).__name__}: {err}"
        if value is not None:
            return value
        if time.monotonic() > deadline:
            tails = "".join(f"\n{_tail(log)}" for log in (logs() if logs else []))
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; "
                               f"last seen: {seen}{tails}")
        time.sleep(POLL_INTERVAL)


def _launch(args: list[str], log: Path, probe: Any, what: str, timeout: float
            ) -> subprocess.Popen[bytes]:
    """Start ``args`` and wait until ``probe`` (a client of it) answers PING. What the
    process prints before its log file opens (a config error) goes to ``console.log``
    beside ``log``; a failure shows the tail of both."""
    console = log.with_name("console.log")
    with console.open("ab") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)

    def tails() -> str:
        shown = _tail(log)
        if console.exists() and console.stat().st_size:
            shown += f"\n{_tail(console)}"
        return shown

    deadline = time.monotonic() + timeout
    last = "nothing yet"
    try:
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(f"{what} exited with status {code} while starting\n"
                                   f"{tails()}")
            try:
                probe.ping()
                return process
            except UNREACHABLE as err:
                last = f"{type(err).__name__}: {err}"
            if time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                raise RuntimeError(f"{what} did not answer PING within {timeout}s "
                                   f"(last: {last})\n{tails()}")
            time.sleep(0.02)
    finally:
        probe.close()


class ReplicatedRedis(RedisServer):
    """A RedisServer that may require a password and may start as a replica, with its
    settings in ``redis.conf`` of its own (written at the first start, kept after, so
    Sentinel's CONFIG REWRITE survives a restart)."""

    def __init__(self, directory: Path, *, name: str, password: str | None = None,
                 replicaof: int | None = None) -> None:
        super().__init__(directory)
        self.name = name
        self.password = password
        self.replicaof = replicaof
        """The primary's port at the first start (later ones follow the config file)."""

    @property
    def config(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 1.0) -> Any:
        """A sync client of this server (str replies, no retries)."""
        return _client(self.port, self.password, timeout)

    def _write_config(self) -> None:
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {_quote(str(self.directory))}",
                 'save ""', "daemonize no", f"logfile {_quote(str(self.log))}",
                 f"appendonly {'yes' if self.appendonly else 'no'}",
                 # A replica's full sync starts at once, not after the 5 s default wait.
                 "repl-diskless-sync-delay 0"]
        if self.password is not None:
            lines += [f"requirepass {_quote(self.password)}",
                      f"masterauth {_quote(self.password)}"]
        if self.replicaof is not None:
            lines.append(f"replicaof 127.0.0.1 {self.replicaof}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self._write_config()
        self.process = _launch([self.binary, str(self.config)], self.log, self.client(0.2),
                               f"redis-server {self.name} (port {self.port})", timeout)


class SentinelProcess:
    """One Sentinel: ``redis-server sentinel.conf --sentinel``, with a config file of its
    own (Sentinel rewrites it as it learns the set)."""

    def __init__(self, directory: Path, *, binary: str, name: str) -> None:
        self.directory = directory
        self.binary = binary
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / "sentinel.conf"

    @property
    def log(self) -> Path:
        return self.directory / "sentinel.log"

    def client(self, timeout: float = 1.0) -> Any:
        return _client(self.port, None, timeout)

    def write_config(self, *, service: str, primary_port: int, password: str | None,
                     down_after_ms: int, failover_timeout_ms: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {_quote(str(self.directory))}",
                 "daemonize no", f"logfile {_quote(str(self.log))}",
                 "sentinel resolve-hostnames no",
                 f"sentinel monitor {service} 127.0.0.1 {primary_port} 2",
                 f"sentinel down-after-milliseconds {service} {down_after_ms}",
                 f"sentinel failover-timeout {service} {failover_timeout_ms}",
                 f"sentinel parallel-syncs {service} 1"]
        if password is not None:
            lines.append(f"sentinel auth-pass {service} {_quote(password)}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self.process = _launch([self.binary, str(self.config), "--sentinel"], self.log,
                               self.client(0.2), f"Sentinel {self.name} (port {self.port})",
                               timeout)

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)


def _pairs(flat: list[Any]) -> dict[str, str]:
    """A Sentinel reply's flat [key, value, key, value, ...] as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class SentinelSet:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 2) on loopback,
    under ``directory``: ``redis-0`` (the first primary), ``redis-1``..., ``sentinel-0``...

    With ``password``, every Redis requires it (``requirepass``) and uses it to follow a
    primary (``masterauth``), and the Sentinels use it (``sentinel auth-pass``); the
    Sentinels themselves require none."""

    def __init__(self, directory: Path, *, replicas: int = 1, sentinels: int = 3,
                 service: str = "mymaster", password: str | None = None,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        if replicas < 1:
            raise ValueError("a failover needs at least one replica")
        if sentinels < 2:
            raise ValueError("the quorum is 2: at least two Sentinels")
        if not service or any(c.isspace() or c in "\"'\\" for c in service):
            raise ValueError(f"Sentinel writes the service name {service!r} unquoted into "
                             f"its config: no spaces or quotes")
        self.directory = directory
        self.service = service
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        first = ReplicatedRedis(directory / "redis-0", name="redis-0", password=password)
        self._servers = [first] + [
            ReplicatedRedis(directory / f"redis-{i}", name=f"redis-{i}", password=password,
                            replicaof=first.port) for i in range(1, replicas + 1)]
        self._sentinels = [SentinelProcess(directory / f"sentinel-{i}", binary=first.binary,
                                           name=f"sentinel-{i}") for i in range(sentinels)]
        self._primary: ReplicatedRedis = first

    # -- what the set is ---------------------------------------------------------------

    @property
    def primary(self) -> ReplicatedRedis:
        """The server that was primary when last known (at start, or the one
        ``wait_for_new_primary`` found)."""
        return self._primary

    @property
    def servers(self) -> list[ReplicatedRedis]:
        """Every data server, the first primary first."""
        return list(self._servers)

    @property
    def sentinels(self) -> list[SentinelProcess]:
        return list(self._sentinels)

    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self._sentinels]

    def sentinel_url(self, db: int = 0, username: str | None = None,
                     password: str | None = None) -> str:
        """``redis+sentinel://[user:password@]127.0.0.1:p1,.../<service>/<db>``. The
        password defaults to the set's; ``password=""`` leaves it out."""
        secret = self.password if password is None else password
        auth = ""
        if username or secret:
            auth = f"{quote(username or '', safe='')}:{quote(secret or '', safe='')}@"
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{auth}{hosts}/{quote(self.service, safe='')}/{db}"

    def plain_url(self, server: RedisServer, db: int = 0) -> str:
        """A direct ``redis://`` URL of one server, with the set's password."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{server.port}/{db}"

    def server_on(self, port: int) -> ReplicatedRedis:
        for server in self._servers:
            if server.port == port:
                return server
        raise LookupError(f"no server of this set listens on port {port} "
                          f"(the set's: {[s.port for s in self._servers]})")

    # -- starting and stopping ---------------------------------------------------------

    def __enter__(self) -> SentinelSet:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Start the primary, the replicas (until each is linked), then the Sentinels (until
        each names the primary and sees every replica and every other Sentinel). On any
        failure everything started is stopped again and the error names what was not
        ready, with the tail of its log."""
        try:
            for server in self._servers:
                server.start()
            for server in self._servers[1:]:
                self._wait_linked_to(server, self._primary.port, timeout)
            for sentinel in self._sentinels:
                sentinel.write_config(service=self.service, primary_port=self._primary.port,
                                      password=self.password,
                                      down_after_ms=self.down_after_ms,
                                      failover_timeout_ms=self.failover_timeout_ms)
                sentinel.start()
            for sentinel in self._sentinels:
                self._wait_sentinel_ready(sentinel, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the Sentinels, then the servers (a Sentinel left running would fail over
        a primary stopped under it). Safe to call again."""
        for sentinel in self._sentinels:
            sentinel.stop()
        for server in self._servers:
            server.stop()

    def _wait_sentinel_ready(self, sentinel: SentinelProcess, timeout: float) -> None:
        primary = self._primary.port
        replicas = sorted(s.port for s in self._servers if s is not self._primary)
        others = len(self._sentinels) - 1

        def probe() -> tuple[bool | None, str]:
            client = sentinel.client()
            try:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                              self.service)
                seen_replicas = [_pairs(r) for r in client.execute_command(
                    "SENTINEL", "REPLICAS", self.service)]
                seen_sentinels = [_pairs(r) for r in client.execute_command(
                    "SENTINEL", "SENTINELS", self.service)]
            finally:
                client.close()
            linked = sorted(int(r["port"]) for r in seen_replicas
                            if "s_down" not in r["flags"] and "disconnected" not in r["flags"]
                            and r.get("master-link-status") == "ok")
            up = [s for s in seen_sentinels if "s_down" not in s["flags"]]
            seen = (f"primary {addr}, linked replicas {linked} (of "
                    f"{[(r['port'], r['flags']) for r in seen_replicas]}), "
                    f"{len(up)} other Sentinels up (of {len(seen_sentinels)})")
            ready = (addr is not None and [addr[0], int(addr[1])] == ["127.0.0.1", primary]
                     and linked == replicas and len(up) == others)
            return (True if ready else None), seen

        _poll(f"{sentinel.name} (port {sentinel.port}) to name primary 127.0.0.1:{primary} "
              f"and see replicas {replicas} and {others} other Sentinels", probe, timeout,
              lambda: [sentinel.log])

    # -- failover ----------------------------------------------------------------------

    def _ask_sentinels(self) -> dict[str, int | str]:
        """Each Sentinel's answer to GET-MASTER-ADDR-BY-NAME: a port, or what went wrong."""
        answers: dict[str, int | str] = {}
        for sentinel in self._sentinels:
            client = sentinel.client()
            try:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                              self.service)
                answers[sentinel.name] = int(addr[1]) if addr else "no primary"
            except UNREACHABLE as err:
                answers[sentinel.name] = f"{type(err).__name__}: {err}"
            finally:
                client.close()
        return answers

    def current_primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers names it."""
        answers = self._ask_sentinels()
        for answer in answers.values():
            if isinstance(answer, int):
                return answer
        raise ConnectionError(f"no Sentinel named a primary for {self.service!r}: {answers}")

    def _role(self, port: int) -> str:
        client = _client(port, self.password)
        try:
            return str(client.execute_command("ROLE")[0])
        finally:
            client.close()

    def kill_primary(self) -> ReplicatedRedis:
        """SIGKILL the server the Sentinels name as primary (no shutdown, no last save);
        return it (``primary`` still names it until ``wait_for_new_primary``)."""
        server = self.server_on(self.current_primary_port())
        if not server.alive:
            raise AssertionError(f"the Sentinels' primary {server.name} (port {server.port}) "
                                 f"is not running")
        server.kill()
        return server

    def wait_for_new_primary(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until a Sentinel names a primary other than ``old_port``, that server answers
        ROLE as master, and every Sentinel that answers names it too (so any Sentinel a
        client asks gives the same answer). Return its port; ``primary`` becomes it."""
        def probe() -> tuple[int | None, str]:
            answers = self._ask_sentinels()
            ports = {a for a in answers.values() if isinstance(a, int)}
            seen = f"Sentinels: {answers}"
            for port in sorted(ports - {old_port}):
                role = self._role(port)
                seen += f"; ROLE of {port}: {role}"
                if role == "master" and ports == {port}:
                    return port, seen
            return None, seen

        port = _poll(f"a primary other than port {old_port} that answers ROLE master and "
                     f"that every Sentinel names", probe, timeout,
                     lambda: [s.log for s in self._sentinels])
        self._primary = self.server_on(port)
        return port

    def restart(self, server: RedisServer) -> None:
        """Bring ``server`` back (killing it first if it still runs) with its config file
        as it stands: a killed primary comes back as a primary until Sentinel reconfigures
        it (``wait_replica_linked``)."""
        own = self.server_on(server.port)
        own.kill()
        own.start()

    def wait_replica_linked(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Wait until ``server`` is a replica of the primary the Sentinels name, with its
        link up."""
        own = self.server_on(server.port)
        primary = self.current_primary_port()
        self._wait_linked_to(own, primary, timeout)

    def _wait_linked_to(self, server: ReplicatedRedis, primary: int, timeout: float) -> None:
        def probe() -> tuple[bool | None, str]:
            client = server.client()
            try:
                info = client.info("replication")
            finally:
                client.close()
            seen = (f"role:{info.get('role')} master_port:{info.get('master_port')} "
                    f"master_link_status:{info.get('master_link_status')}")
            linked = (info.get("role") == "slave" and int(info.get("master_port", 0)) == primary
                      and info.get("master_link_status") == "up")
            return (True if linked else None), seen

        _poll(f"{server.name} (port {server.port}) to be a replica of port {primary} with "
              f"master_link_status:up", probe, timeout, lambda: [server.log])
