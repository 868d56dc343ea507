"""The shipped Redis lockdown, run for real: deploy/redis/redis.conf plus the controller user
exactly as docker-compose.yml passes it to redis-server, with a test password.

Only the port, the bind addresses, the data directory and daemonize are overridden (and,
for the commented TLS block, the certificate files, which the test makes).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from common import redis_client
from tests.support.redis_server import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_VARIABLE = re.compile(r"\$\{PIC_REDIS_PASSWORD(?::\?[^}]*)?\}")
TEST_PASSWORD = "test-" + uuid.uuid4().hex
CONTROLLER = "pic-controller"


def compose_redis() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]


def shipped_config() -> Path:
    """The host file compose mounts where the redis command reads its configuration."""
    service = compose_redis()
    target = service["command"][1]
    for volume in service["volumes"]:
        source, mounted, *_ = volume.split(":")
        if mounted == target:
            return (ROOT / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def compose_user_args(password: str) -> list[str]:
    """redis-server's --user arguments in docker-compose.yml, the password substituted."""
    command = compose_redis()["command"]
    assert command[0] == "redis-server"
    start = command.index("--user")
    end = next((i for i in range(start + 1, len(command)) if command[i].startswith("--")),
               len(command))
    args = [str(arg) for arg in command[start:end]]
    substituted = [PASSWORD_VARIABLE.sub(password, arg) for arg in args]
    assert sum(a != b for a, b in zip(args, substituted, strict=True)) == 1, args
    return substituted


def non_loopback_address() -> str | None:
    """An IPv4 address of this host that is not loopback (containers connect from one)."""
    if shutil.which("ip") is None:
        return None
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                           capture_output=True, text=True, check=False).stdout
    for address in re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", shown):
        if not ipaddress.ip_address(address).is_loopback:
            return address
    if _only_loopback() and os.geteuid() == 0:
        # The suite runs in a network namespace of its own with nothing but loopback: give
        # it an address that is not loopback, which goes away with the namespace.
        added = subprocess.run(["ip", "addr", "add", f"{OWN_ADDRESS}/32", "dev", "lo"],
                               check=False, capture_output=True)
        if added.returncode == 0 or b"exists" in added.stderr:
            return OWN_ADDRESS
    return None


OWN_ADDRESS = "10.253.77.1"


def _only_loopback() -> bool:
    """Whether this network namespace has no interface but lo (a test namespace: a real
    host always has another one)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout
    return [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    remote_host: str | None

    def client(self, username: str | None = CONTROLLER, password: str | None = TEST_PASSWORD,
               host: str = "127.0.0.1", **kwargs: object) -> redis.Redis:
        return redis.Redis(host=host, port=self.port, username=username, password=password,
                           socket_timeout=5, retry=Retry(NoBackoff(), 0), **kwargs)


def start_server(directory: Path, config: Path, overrides: list[str], *, port: int,
                 bind: str = "127.0.0.1", tls_ca: Path | None = None,
                 timeout: float = 10.0) -> tuple[subprocess.Popen[bytes], Path]:
    """Start redis-server and wait until the controller user gets PONG on ``port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    args = [binary, str(config), *compose_user_args(TEST_PASSWORD), *overrides,
            "--bind", *bind.split(), "--dir", str(directory), "--daemonize", "no"]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    tls = {"ssl": True, "ssl_ca_certs": str(tls_ca)} if tls_ca else {}
    probe = redis.Redis(host="127.0.0.1", port=port, username=CONTROLLER,
                        password=TEST_PASSWORD, socket_connect_timeout=0.5, socket_timeout=2,
                        retry=Retry(NoBackoff(), 0), **tls)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"redis-server exited: {log.read_text()[-2000:]}")
            try:
                assert probe.ping()
                return process, log
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait(10)
                    raise AssertionError(f"redis-server not ready: "
                                         f"{log.read_text()[-2000:]}") from None
                time.sleep(0.02)
    finally:
        probe.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    remote = non_loopback_address()
    bind = "127.0.0.1" + (f" {remote}" if remote else "")
    directory = tmp_path_factory.mktemp("locked-redis")
    port = free_port()
    process, log = start_server(directory, shipped_config(), ["--port", str(port)], port=port,
                                bind=bind)
    yield Server(process, port, log, remote)
    stop_process(process)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_an_unauthenticated_client_gets_nothing(server: Server) -> None:
    anonymous = server.client(username=None, password=None)
    try:
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            anonymous.ping()
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            anonymous.get("pic:anything")
    finally:
        anonymous.close()
    # The default user is off: not even an empty or guessed password logs in as it.
    for password in ("", "default", TEST_PASSWORD):
        guessing = server.client(username="default", password=password)
        try:
            with pytest.raises(redis.AuthenticationError):
                guessing.ping()
        finally:
            guessing.close()


def test_the_default_user_has_no_password_command_or_key(server: Server) -> None:
    controller = server.client(decode_responses=True)
    try:
        reply = controller.execute_command("ACL", "GETUSER", "default")
    finally:
        controller.close()
    default = dict(zip(reply[::2], reply[1::2], strict=True))
    assert "off" in default["flags"]
    assert "nopass" not in default["flags"]
    assert default["passwords"] == []
    assert default["commands"] == "-@all"
    assert default["keys"] == ""


def test_a_wrong_controller_password_is_refused(server: Server) -> None:
    wrong = server.client(password=TEST_PASSWORD + "x")
    try:
        with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
            wrong.ping()
    finally:
        wrong.close()


def test_the_controller_uses_its_keys_and_reports_on_redis(server: Server) -> None:
    controller = server.client()
    key = unique("pic:probe:")
    try:
        assert controller.set(key, "v")
        assert controller.get(key) == b"v"
        assert controller.acl_whoami() == CONTROLLER
        assert "redis_version" in controller.info("server")
        assert controller.execute_command("ROLE")[0] == b"master"
        assert controller.delete(key) == 1
    finally:
        controller.close()


class RawClient:
    """One plain RESP connection, to see the server close it (redis-py would reconnect)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.replies = self.sock.makefile("rb")

    def call(self, *args: str) -> bytes:
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(request)
        line = self.replies.readline()
        if line.startswith(b"$") and line != b"$-1\r\n":
            line += self.replies.readline()
        return line

    def closed_by_server(self) -> bool:
        return self.replies.readline() == b""

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


def test_the_controller_manages_agent_users(server: Server) -> None:
    controller = server.client()
    node = unique("x")
    user, stream = f"pic:agent:{node}", f"pic:in:{node}"
    agent_password = "pw-" + uuid.uuid4().hex
    try:
        assert controller.execute_command(
            "ACL", "SETUSER", user, "on", f">{agent_password}", f"~{stream}", "+xadd") == b"OK"
        agent = RawClient(server.port)
        try:
            assert agent.call("AUTH", user, agent_password) == b"+OK\r\n"
            assert agent.call("XADD", stream, "*", "k", "v").startswith(b"$")
            assert agent.call("XADD", "pic:in:someone-else", "*", "k", "v").startswith(
                b"-NOPERM")
            assert agent.call("GET", stream).startswith(b"-NOPERM")
            assert controller.execute_command("CLIENT", "KILL", "USER", user) == 1
            assert agent.closed_by_server()
        finally:
            agent.close()
        assert controller.execute_command("ACL", "DELUSER", user) == 1
        gone = server.client(username=user, password=agent_password)
        try:
            with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
                gone.ping()
        finally:
            gone.close()
        assert controller.xlen(stream) == 1
    finally:
        controller.delete(stream)
        controller.execute_command("ACL", "DELUSER", user)
        controller.close()


def test_the_compose_enroll_service_issues_working_agent_credentials(
        server: Server, tmp_path: Path) -> None:
    """enroll's command and environment, as compose runs them, against this Redis."""
    enroll = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["enroll"]
    command = enroll["command"]
    assert command[:2] == ["pi-controller", "agent-credentials"]
    out_dir = tmp_path / "creds"
    args = [str(out_dir) if arg == "/creds" else arg for arg in command[2:]]
    address = f"127.0.0.1:{server.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIC_")}
    for name, value in enroll["environment"].items():
        env[name] = PASSWORD_VARIABLE.sub(TEST_PASSWORD, str(value)).replace("redis:6379",
                                                                              address)
    result = subprocess.run([sys.executable, "-m", "controller", "agent-credentials", *args],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    controller = server.client()
    try:
        for node in ("sim-pi-1", "sim-pi-2"):
            url_file = out_dir / f"{node}.url"
            assert url_file.stat().st_mode & 0o777 == 0o600
            agent = redis.Redis.from_url(url_file.read_text().strip(), socket_timeout=5,
                                         retry=Retry(NoBackoff(), 0))
            try:
                assert agent.connection_pool.connection_kwargs["username"] \
                    == f"pic:agent:{node}"
                assert agent.ping()
                with pytest.raises(redis.exceptions.NoPermissionError):
                    agent.hgetall("pic:agents")
            finally:
                agent.close()
            assert controller.execute_command("ACL", "DELUSER", f"pic:agent:{node}") == 1
    finally:
        controller.close()


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "protected-mode"), ("KEYS", "*"),
    ("ACL", "LIST"), ("SAVE",), ("SHUTDOWN",), ("CLIENT", "LIST"),
])
def test_the_controller_may_not_run_dangerous_commands(server: Server,
                                                       command: tuple[str, ...]) -> None:
    controller = server.client()
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            controller.execute_command(*command)
    finally:
        controller.close()
    assert server.process.poll() is None, server.log.read_text()[-2000:]


def test_the_controller_reaches_no_key_outside_pic(server: Server) -> None:
    controller = server.client()
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            controller.set("other:key", "v")
        with pytest.raises(redis.exceptions.NoPermissionError):
            controller.get("other:key")
    finally:
        controller.close()


def test_clients_on_the_network_log_in_with_protected_mode_on(server: Server) -> None:
    """Containers reach Redis from a non-loopback address: protected mode must not refuse
    them, and an anonymous one still gets nothing."""
    if server.remote_host is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    controller = server.client(host=server.remote_host)
    anonymous = server.client(username=None, password=None, host=server.remote_host)
    try:
        assert controller.ping()
        seen_from = controller.client_info()["addr"].rsplit(":", 1)[0]
        assert seen_from == server.remote_host
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            anonymous.ping()
    finally:
        controller.close()
        anonymous.close()


def directives(text: str) -> dict[str, list[str]]:
    """Effective directives of a redis.conf (the last one wins; user lines accumulate)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        name = words[0].lower()
        if name == "user":
            found.setdefault("user", []).append(" ".join(words[1:]))
        else:
            found[name] = [" ".join(words[1:])]
    return found


def test_the_shipped_config_locks_down_and_keeps_the_aof() -> None:
    config = directives(shipped_config().read_text())
    assert config["protected-mode"] == ["yes"]
    assert config["user"] == ["default off"]
    assert config["appendonly"] == ["yes"]
    assert config["maxmemory"] == ["256mb"]
    # No secret in the file; no bind, which would shut out the other containers.
    for unsafe in ("requirepass", "masterauth", "bind"):
        assert unsafe not in config, f"redis.conf sets {unsafe}"


def test_the_password_is_not_in_the_process_list(server: Server) -> None:
    cmdline = Path(f"/proc/{server.process.pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc here")
    shown = cmdline.read_bytes()
    assert shown, "empty command line"
    assert TEST_PASSWORD.encode() not in shown


def healthcheck(port: int) -> list[str]:
    test = compose_redis()["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "redis-cli"
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    return ["redis-cli", "-p", str(port), *test[2:]]


@pytest.mark.parametrize(("auth", "healthy"), [
    (TEST_PASSWORD, True), (TEST_PASSWORD + "x", False), (None, False)],
    ids=["right-password", "wrong-password", "no-password"])
def test_the_compose_healthcheck_needs_the_password(server: Server, auth: str | None,
                                                    healthy: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if auth is not None:
        env["REDISCLI_AUTH"] = auth
    result = subprocess.run(healthcheck(server.port), env=env, capture_output=True,
                            text=True, timeout=10, check=False)
    assert (result.returncode == 0) is healthy, result
    assert ("PONG" in result.stdout) is healthy, result


# TLS: the commented block of redis.conf, uncommented, with certificates made here.

TLS_LINE = re.compile(r"^# ((?:tls-[a-z-]+|port) \S+)$", re.M)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, key_cert_sign=True, crl_sign=True,
              content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = (directory / "ca.crt", directory / "redis.crt",
                                    directory / "redis.key")
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, from its socket inodes and /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _product_client_get(url: str, ca_file: str) -> bytes | None:
    client = redis_client.connect(url, ca_file=ca_file, retries=0)
    try:
        return await client.get("pic:tls")  # type: ignore[no-any-return]
    finally:
        await client.aclose()


def test_the_commented_tls_block_serves_rediss_with_a_ca_file(tmp_path: Path) -> None:
    text = shipped_config().read_text()
    enabled = {line.split()[0]: line.split()[1] for line in TLS_LINE.findall(text)}
    assert {"tls-port", "port", "tls-cert-file", "tls-key-file", "tls-ca-cert-file"} \
        <= set(enabled), enabled
    assert enabled["port"] == "0"
    ca_file, cert_file, key_file = make_certificates(tmp_path)
    config = tmp_path / "redis-tls.conf"
    config.write_text(TLS_LINE.sub(r"\1", text))
    tls_port = free_port()
    process, log = start_server(
        tmp_path / "data", config,
        ["--tls-port", str(tls_port), "--tls-cert-file", str(cert_file),
         "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file)],
        port=tls_port, tls_ca=ca_file)
    try:
        url = f"rediss://{CONTROLLER}:{TEST_PASSWORD}@127.0.0.1:{tls_port}/0"
        client = redis.Redis.from_url(url, ssl_ca_certs=str(ca_file), socket_timeout=5)
        try:
            assert client.set("pic:tls", "v")
            assert client.get("pic:tls") == b"v"
        finally:
            client.close()
        # The product's own client (controller and agents): PIC_REDIS_CA_FILE is what makes
        # the server's certificate trusted.
        assert asyncio.run(_product_client_get(url, str(ca_file))) == b"v"
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate"):
            asyncio.run(_product_client_get(url, ""))
        # "port 0": plain TCP is off, the TLS port is the only one Redis listens on.
        if Path("/proc/net/tcp").exists():
            assert listening_ports(process.pid) == {tls_port}, log.read_text()[-2000:]
    finally:
        stop_process(process)
