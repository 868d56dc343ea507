"""The product's own processes (controller, agents) started as the user would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

ADMIN_TOKEN = "pic_test_admin_token"


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
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
          env: dict[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "agent", "--redis-url", redis_url, "--node-id", node_id,
                 "--hostname", node_id, "--address", "127.0.0.1", "--heartbeat-interval", "0.5",
                 *(extra or [])], log, env)


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
