"""One SSH session to a Pi: pinned host key, ``sudo -n``, captured and redacted output."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from common.errors import PiControllerError
from controller.provision.credentials import ControllerKey, known_hosts, pin_host_key
from controller.provision.redact import Redactor
from controller.store.host_keys import HostKeys

SUDO_PASSWORD_HINT = (
    "sudo asked for a password: the controller always runs 'sudo -n'. Give the user "
    "passwordless sudo, e.g. '{user} ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/010_{user}-nopasswd"
    " (Raspberry Pi OS ships this for its first user)")


class StepFailed(PiControllerError):
    """A step could not be completed; ``message`` is for the user, ``remote`` the Pi's own
    error output (already redacted)."""

    def __init__(self, message: str, remote: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remote = remote


@dataclass(frozen=True, slots=True)
class Result:
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Target:
    node_id: str
    host: str
    port: int
    user: str


async def connect(target: Target, key: ControllerKey, pins: HostKeys, *, timeout: float,
                  password: str | None = None) -> asyncssh.SSHClientConnection:
    """Open a connection, pinning the host key on first use and refusing a changed one."""
    pin = await pins.get(target.host, target.port)
    where = f"{target.user}@{target.host}:{target.port}"
    options: dict[str, object] = {"password": password, "client_keys": []} if password \
        else {"client_keys": [key.private()], "password_auth": False}
    try:
        async with asyncio.timeout(timeout + 5):
            conn = await asyncssh.connect(
                target.host, target.port, username=target.user,
                known_hosts=known_hosts(pin) if pin else None,
                connect_timeout=timeout, login_timeout=timeout, config=[], agent_path=None,
                keepalive_interval=15, **options)
    except asyncssh.HostKeyNotVerifiable as err:
        raise StepFailed(
            f"the SSH host key of {target.host}:{target.port} is not the one pinned "
            f"({pin.fingerprint if pin else '?'}); refusing to connect. If the Pi was "
            f"reinstalled, remove the pin (DELETE /api/v1/ssh/host-keys/{target.host}:"
            f"{target.port}) and retry", str(err)) from err
    except asyncssh.PermissionDenied as err:
        how = "the password given" if password else "the controller's key"
        raise StepFailed(
            f"{where} refused {how}: add the controller's public key "
            "(GET /api/v1/ssh/public-key) to ~/.ssh/authorized_keys of that user, or install "
            "it once with the password (POST /api/v1/nodes/{id}/ssh-key)", str(err)) from err
    except TimeoutError as err:
        raise StepFailed(f"cannot reach {where}: no answer within {timeout:.0f}s") from err
    except (OSError, asyncssh.Error) as err:
        reason = str(err) or type(err).__name__
        raise StepFailed(f"cannot reach {where}: {reason}", reason) from err
    if pin is None:
        presented = conn.get_server_host_key()
        assert presented is not None
        held = await pin_host_key(pins, target.host, target.port, presented, target.node_id)
        if held.key != presented.export_public_key().decode().strip():
            conn.close()
            raise StepFailed(f"the SSH host key of {target.host}:{target.port} changed while "
                             "it was being pinned; refusing to connect")
    return conn


class Session:
    """Runs commands on one Pi; every command and its output go to ``log`` (redacted)."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: Target,
                 redact: Redactor, log: Callable[[str], None]) -> None:
        self.conn = conn
        self.target = target
        self.redact = redact
        self._log = log

    def log(self, text: str) -> None:
        self._log(self.redact(text))

    async def run(self, command: str, *, sudo: bool = False, stdin: str | None = None,
                  timeout: float = 600.0, check: bool = True, quiet: bool = False) -> Result:
        """Run ``command`` (as root through ``sudo -n`` when asked). Secrets go in ``stdin``,
        never in the command line, which the Pi's process list and our output show."""
        line = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
        if not quiet:
            self.log(f"$ {'sudo ' if sudo else ''}{command}\n")
        try:
            async with asyncio.timeout(timeout):
                done = await self.conn.run(line, input=stdin, check=False)
        except TimeoutError as err:
            raise StepFailed(f"command timed out after {timeout:.0f}s on "
                             f"{self.target.host}") from err
        except (OSError, asyncssh.Error) as err:
            raise StepFailed(f"lost the connection to {self.target.host}: {err}") from err
        out = _text(done.stdout)
        err_text = _text(done.stderr)
        status = done.exit_status if done.exit_status is not None else 255
        if not quiet:
            self.log(out + err_text + (f"[exit {status}]\n" if status else ""))
        if sudo and status != 0 and "a password is required" in err_text:
            raise StepFailed(SUDO_PASSWORD_HINT.format(user=self.target.user),
                             self.redact(err_text.strip()))
        if check and status != 0:
            tail = self.redact((err_text.strip() or out.strip())[-600:])
            raise StepFailed(f"'{_first_word(command)}' failed on {self.target.host} "
                             f"(exit {status}): {tail}", tail)
        return Result(status, out, err_text)

    async def upload(self, local: Path, remote: str) -> None:
        self.log(f"sftp put {local.name} -> {remote}\n")
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)
        except (OSError, asyncssh.Error) as err:
            raise StepFailed(f"uploading {local.name} to {self.target.host} failed: {err}"
                             ) from err

    def close(self) -> None:
        self.conn.close()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _first_word(command: str) -> str:
    words = command.strip().split()
    return " ".join(words[:2]) if words else command
