"""A Redis URL that cannot be used is one line and a non-zero exit; Sentinels that never
answer are retried (as an unreachable Redis is), and SIGTERM still stops every process
promptly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.redis_server import free_port


@pytest.mark.parametrize(("program", "url", "says"), [
    ("controller", "redis+sentinel://127.0.0.1/mymaster", "is not host:port"),
    ("controller", "redis+sentinel://127.0.0.1:26379", "names the service"),
    ("controller", "rediss+sentinel://127.0.0.1:26379/m/zero", "is not a number"),
    ("controller", "memcached://127.0.0.1:11211", "scheme memcached:// is not one of"),
    ("agent", "redis://:s3cret@127.0.0.1:99999/0", "Port out of range"),
    ("agent", "redis+sentinel://127.0.0.1:26379/m?colour=red", "unknown Sentinel URL "),
])
def test_an_unusable_url_is_one_line_and_exit_2(program: str, url: str, says: str) -> None:
    args = ["serve"] if program == "controller" else ["--node-id", "pi-1"]
    done = subprocess.run([sys.executable, "-m", program, *args, "--redis-url", url],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "s3cret" not in done.stderr


@pytest.mark.parametrize("program", ["controller", "agent"])
def test_sentinels_that_never_answer_are_retried_and_sigterm_stops(
        program: str, tmp_path: Path) -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster/0"
    args = (["serve", "--port", str(free_port())] if program == "controller"
            else ["--node-id", "pi-1"])
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", program, *args, "--redis-url", url],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "retrying" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert "retrying" in log.read_text(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert proc.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - stopped < 5
        assert "Traceback" not in log.read_text()
    finally:
        proc.kill()
        proc.wait()
