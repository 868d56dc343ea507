"""The product's own processes (controller, agents) started as the user would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

ADMIN_TOKEN = "pic_test_admin_token_for_the_suite_only"


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 before_start: Callable[[], None] | None = None) -> None:
        self.args = args
        self.log_path = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._before_start = before_start

    def prepare(self) -> None:
        """What must be done before the process can start (e.g. issuing its credentials)."""
        if self._before_start is not None:
            self._before_start()

    def start(self) -> Proc:
        self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
            raise AssertionError(f"{self.args[:3]} ignored SIGTERM:\n{self.log()[-3000:]}"
                                 ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def controller(redis_url: str, log: Path, *, port: int | None = None,
               extra: list[str] | None = None, env: dict[str, str] | None = None) -> Proc:
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "controller", "serve", "--redis-url", redis_url,
                 "--port", str(port), *(extra or [])], log,
                {"PIC_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})})
    proc.port = port  # type: ignore[attr-defined]
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return proc


def agent(redis_url: str, node_id: str, log: Path, *, extra: list[str] | None = None,
          env: dict[str, str] | None = None, confined: bool = True) -> Proc:
    """A pi-agent process. ``confined`` (the default): ``redis_url`` is the controller's, and
    the agent runs with credentials of its own issued from it (``pi-controller
    agent-credentials``, once per node and log folder, so a restart keeps them), as every
    real Pi does. Otherwise it connects with ``redis_url`` itself."""
    url_file = log.parent / "agent-credentials" / f"{node_id}.url"

    def issue() -> None:
        if not url_file.exists():
            issue_credentials(redis_url, [node_id], url_file.parent)

    target = ["--redis-url-file", str(url_file)] if confined else ["--redis-url", redis_url]
    return Proc([sys.executable, "-m", "agent", *target, "--node-id", node_id,
                 "--hostname", node_id, "--address", "127.0.0.1", "--heartbeat-interval", "0.5",
                 *(extra or [])], log, env, before_start=issue if confined else None)


def issue_credentials(redis_url: str, node_ids: list[str], out_dir: Path,
                      prefix: str = "pic:") -> None:
    """``pi-controller agent-credentials``, run as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "controller", "agent-credentials", "--redis-url", redis_url,
         "--redis-prefix", prefix, *node_ids, "--out-dir", str(out_dir)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def wait_ready(url: str, proc: Proc, timeout: float = 20.0) -> None:
    async def ready() -> bool:
        if not proc.running:
            raise AssertionError(f"process exited:\n{proc.log()[-3000:]}")
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(ready, timeout, interval=0.05, what=f"{url}/readyz")


async def enroll(controller_url: str, node_id: str) -> str:
    """Issue a node's own agent credentials through the API, as an admin would; its URL."""
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session, session.post(
            f"{controller_url}/api/v1/nodes/{node_id}/agent-credentials") as response:
        body = await response.json()
        assert response.status == 201, body
        return str(body["redis_url"])
