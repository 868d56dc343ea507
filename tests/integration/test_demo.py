"""The README's one command: embedded Redis, controller, simulated Pis; Ctrl-C leaves nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.processes import ADMIN_TOKEN, Proc, wait_ready
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until
from tests.support.wsclient import WsRecorder


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            child = int(entry.name)
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


async def test_demo_runs_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PIC_REDIS_URL"}
    env["PIC_ADMIN_TOKEN"] = ADMIN_TOKEN
    demo = Proc([sys.executable, "-m", "controller", "demo", "--port", str(port), "--nodes", "2",
                 "--state", str(tmp_path / "state")], tmp_path / "demo.log")
    demo.env = env
    demo.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, demo, timeout=30)
        await wait_until(lambda: "Admin token:" in demo.log(), 20, what="the banner")
        assert ADMIN_TOKEN in demo.log()
        # The banner's events command runs as printed (the CLI by a path that exists).
        [line] = [ln for ln in demo.log().splitlines() if "Events:" in ln]
        command = line.split("Events:", 1)[1].split()
        assert command[0] == "pi-controller" or Path(command[0]).is_file(), command
        program = (str(Path(sys.executable).parent / "pi-controller")
                   if command[0] == "pi-controller" else command[0])
        history = await asyncio.to_thread(
            subprocess.run, [program, *[a for a in command[1:] if a != "--follow"]],
            capture_output=True, text=True, timeout=60, check=False)
        assert history.returncode == 0, history.stderr
        assert demo.process is not None
        children = descendants(demo.process.pid)
        assert len(children) >= 3  # redis + 2 agents
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http, WsRecorder(
                http, f"ws://127.0.0.1:{port}/ws?snapshot=1") as ws:
            await ws.wait_for(lambda m: m["type"] == "ws.snapshot.end")
            assert {m["node_id"] for m in ws.of_type("node.snapshot")} == {
                "pi-demo-1", "pi-demo-2"}
            assert len(ws.of_type("gpio.snapshot")) == 6
            # The simulated buttons change by themselves: live events flow.
            await ws.wait_for(lambda m: m["type"] == "gpio.state.changed"
                              and m["resource"].startswith("button-"), timeout=30,
                              what="a simulated input edge")
        demo.signal(signal.SIGINT)
        assert demo.wait(30) == 0
        await wait_until(lambda: not any(alive(pid) for pid in children), 10,
                         what="every child process gone")
        assert (tmp_path / "state" / "redis").is_dir()
    finally:
        if demo.running:
            demo.kill()
        for pid in children if "children" in locals() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in demo.log()
