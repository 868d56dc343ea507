"""`pi-controller events`: history and errors a person can read."""

from __future__ import annotations

import json
import subprocess
import sys

from common import events
from controller import appkeys
from tests.conftest import RunningController
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import free_port


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", "events", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_an_unreachable_controller_is_a_one_line_error() -> None:
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}/", "--token", "x")
    assert result.returncode == 1
    assert "cannot read events" in result.stderr
    assert "Traceback" not in result.stderr


async def test_history_and_a_wrong_token(controller: RunningController) -> None:
    store = controller.app[appkeys.STORE]  # type: ignore[index]
    for n in range(3):
        await store.events.append(events.system_log_created("info", f"line {n}"))
    ok = await _run(controller.url, ADMIN_TOKEN)
    assert ok.returncode == 0, ok.stderr
    printed = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [e["data"]["message"] for e in printed] == ["line 0", "line 1", "line 2"]
    wrong = await _run(controller.url, "pic_wrong")
    assert wrong.returncode == 1
    assert "401" in wrong.stderr and "Traceback" not in wrong.stderr


async def _run(url: str, token: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(run_cli, "--url", url + "/", "--token", token)


async def test_following_with_a_bad_filter_stops_with_the_servers_reason(
        controller: RunningController) -> None:
    import asyncio

    result = await asyncio.to_thread(run_cli, "--url", controller.url + "/", "--token",
                                     ADMIN_TOKEN, "--follow", "--types", "nope.nope")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server closed the stream (4400): types:"), last
    assert "resuming" not in result.stderr
