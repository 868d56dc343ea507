"""Processes for the benchmarks: pinned to a core, measured from /proc, always stopped."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children (servers, client) inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class Proc:
    """A child process on one core, its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], log: Path, *, core: int | None,
                 env: dict[str, str] | None = None, stdout_pipe: bool = False,
                 cwd: Path | None = None) -> None:
        self.name = name
        pinned = ["taskset", "-c", str(core)] if core is not None else []
        self.args = [*pinned, *args]
        self.log_path = log
        self.env = {**os.environ, **(env or {})}
        self.stdout_pipe = stdout_pipe
        self.cwd = cwd
        """``python -m`` imports from the working directory first: a tree runs from its own."""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # taskset execs the program, so the pid is the program's own.
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.stdout_pipe else log,
                stderr=log, env=self.env, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


class RedisServer(Proc):
    def __init__(self, name: str, directory: Path, core: int | None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (scripts/test installs it)")
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(name, [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                "--dir", str(directory), "--save", "", "--appendonly", "no",
                                "--daemonize", "no"], directory / "redis.log", core=core)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_tcp(self.port, self, 10.0)
        return self


def wait_tcp(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not listening on {port}:\n{proc.log_tail()}"
                                   ) from None
            time.sleep(0.05)


def wait_http_ok(url: str, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: {url} not ready:\n{proc.log_tail()}")
        time.sleep(0.05)


def core_times() -> dict[int, tuple[float, float, float]]:
    """(busy, softirq, total) seconds per core from /proc/stat."""
    out: dict[int, tuple[float, float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
        busy = user + nice + system + irq + softirq + steal
        out[int(name[3:])] = (busy / CLK_TCK, softirq / CLK_TCK,
                              (busy + idle + iowait) / CLK_TCK)
    return out


def core_pct(before: dict[int, tuple[float, float, float]],
             after: dict[int, tuple[float, float, float]]) -> dict[int, tuple[float, float]]:
    """Per core: (busy %, softirq %) between two ``core_times()``."""
    out: dict[int, tuple[float, float]] = {}
    for core in after:
        total = max(after[core][2] - before[core][2], 1e-9)
        out[core] = (100.0 * (after[core][0] - before[core][0]) / total,
                     100.0 * (after[core][1] - before[core][1]) / total)
    return out


def raise_priority(nice: int) -> int:
    """Lower this process's niceness (children inherit it); returns the niceness in effect.

    With ``sched_autogroup`` (the default on desktop-style kernels) niceness only ranks
    processes within one session; between sessions the session's autogroup niceness counts,
    so that is set too. Children must stay in this session (no ``setsid``) to share it.
    """
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))
    with contextlib.suppress(PermissionError):
        os.nice(nice - os.nice(0))
    return os.nice(0)
