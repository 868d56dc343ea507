"""/ws fan-out benchmark: our controller, the Node.js reference and a naive aiohttp server.

All three run side by side in one invocation, each with its own redis-server, on core 0
(``taskset -c 0``); the load client (the reference's ``ws-load-client.js --mode raw``), the
publisher and this script run on core 1. The publisher XADDs at a fixed rate with
``sent_ns = time.time_ns()`` in every event; latency is receive time minus ``sent_ns``.
Server CPU is utime + stime from ``/proc/<pid>/stat`` over the measured window, divided by
the messages the client received. Scenarios (issue 3, "Performance targets"):

  1  1,000 clients x 60 events/s    server CPU per delivered message
  2  1,000 clients x 100 events/s   everything delivered? p50/p99 latency
  3  100 clients x 1,000 events/s   p99 latency
  4  10,000 idle authenticated connections   server memory per connection
  5  1,000 x 60 plus one client that never reads   the others' p99 against scenario 1
  6  one client floods pings and snapshot requests and never reads   server RSS growth,
     and when the server closed it (ours and before only: the others have no ops)

Servers: ``ours`` (this checkout), ``before`` (our controller at the revision before /ws
was bounded, _trees.BEFORE_WS_BOUNDS), the Node.js reference ``node`` and ``naive``.

    .venv/bin/python bench/bench_fanout.py                      # everything, ~10 minutes
    .venv/bin/python bench/bench_fanout.py --only 1,2 --seconds 10 --reps 3
    .venv/bin/python bench/bench_fanout.py --only 1 --servers ours,node --profile
    .venv/bin/python bench/bench_fanout.py --only 6 --servers ours,before

Raw results go to bench/results/fanout-<time>.json, server logs next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _procs
import _reference
import _stuck
import _trees
from _load import Feed, LoadClient, publish
from _stuck import StuckClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOKEN = "pic_bench_admin_token_for_benchmarks_only"
SERVER_CORE = 0
LOAD_CORE = 1
SERVERS = ("ours", "before", "node", "naive")
OURS = ("ours", "before")
TRAFFIC = {1: (1000, 60.0), 2: (1000, 100.0), 3: (100, 1000.0), 5: (1000, 60.0)}
IDLE_CONNECTIONS = 10_000
FLOOD_WINDOW = 10.0
"""Seconds scenario 6 floods and watches; the target is a close within 5."""
FLOOD_NODES = 50
FLOOD_NODE_BYTES = 1000
"""State seeded for scenario 6, so each snapshot it asks for weighs about 60 KB."""
STUCK_PREFILL = 30_000
"""Events (about 7 MB) published to the stuck client alone before the others connect. The
kernel takes up to 4 MB (tcp_wmem) into the server's send queue before the server sees any
backlog of its own; this fills it, so the server's slow-client handling is engaged when
measuring starts (at 60 events/s that would take minutes)."""
LOG_NOISE = re.compile(r"traceback|error|exception|closing /ws client|xread", re.IGNORECASE)


@dataclass
class Target:
    """One server under test with its own Redis."""

    kind: str
    proc: _procs.Proc
    redis: _procs.RedisServer
    port: int
    feed: Feed
    log_offset: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def new_log_lines(self) -> list[str]:
        try:
            with self.proc.log_path.open("rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode(errors="replace")
                self.log_offset = log.tell()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if LOG_NOISE.search(line)]


def start_target(kind: str, workdir: Path, ref: _reference.Reference, redis_core: int, *,
                 tree: Path | None = None, extra: list[str] | None = None) -> Target:
    """Start a server under test; ``tree`` runs our controller from another revision."""
    redis = _procs.RedisServer(f"redis-{kind}", workdir / f"redis-{kind}", redis_core).start()
    port = _procs.free_port()
    log = workdir / f"{kind}.log"
    if kind == "before" and tree is None:
        tree = _trees.materialize(_trees.BEFORE_WS_BOUNDS, workdir / "tree-before")
    env = {"PIC_ADMIN_TOKEN": TOKEN, **_trees.env(tree)}
    if kind in OURS:
        # The raw load client answers no pings: keep heartbeats out of the measured runs.
        # All its connections share one token: lift the per-token cap where there is one.
        caps = ["--ws-max-per-token", "1000000"] if tree is None else []
        proc = _procs.Proc(kind, [sys.executable, "-m", "controller", "serve", "--redis-url",
                                  redis.url, "--port", str(port), "--ws-heartbeat", "3600",
                                  *caps, *(extra or [])],
                           log, core=SERVER_CORE, env=env, cwd=tree).start()
        _procs.wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60)
        feed = Feed(redis.url, "pic:events", "e", "envelope")
    elif kind == "naive":
        proc = _procs.Proc(kind, [sys.executable, str(HERE / "naive_server.py"), "--redis-url",
                                  redis.url, "--port", str(port)],
                           log, core=SERVER_CORE, env=env).start()
        _procs.wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60)
        feed = Feed(redis.url, "pic:events", "e", "envelope")
    else:
        proc = _procs.Proc(kind, [ref.node, str(ref.server), "--port", str(port), "--path",
                                  "/ws", "--redis-url", redis.url, "--stream", "bench:events",
                                  "--field", "d"], log, core=SERVER_CORE, env=ref.env).start()
        _procs.wait_tcp(port, proc, 30)
        feed = Feed(redis.url, "bench:events", "d", "ref")
    target = Target(kind, proc, redis, port, feed)
    target.new_log_lines()
    return target


async def settle(targets: list[Target], *, timeout: float = 20.0) -> list[str]:
    """Wait until every server is idle (a backlog elsewhere must not steal core 0)."""
    deadline = time.monotonic() + timeout
    busy: list[str] = []
    while time.monotonic() < deadline:
        before = [_procs.cpu_seconds(t.proc.pid) for t in targets]
        await asyncio.sleep(0.3)
        after = [_procs.cpu_seconds(t.proc.pid) for t in targets]
        busy = [t.kind for t, a, b in zip(targets, before, after, strict=True)
                if (b - a) / 0.3 > 0.05]
        if not busy:
            return []
    return busy


def server_send_queue(port: int, peer_port: int) -> int | None:
    out = subprocess.run(["ss", "-tnH", f"( sport = :{port} and dport = :{peer_port} )"],
                         capture_output=True, text=True, check=False).stdout.split()
    return int(out[2]) if len(out) >= 3 else None


def ms(value: Any) -> float | None:
    return None if value is None else value / 1000.0


async def run_traffic(target: Target, ref: _reference.Reference, *, clients: int, rate: float,
                      seconds: float, stuck: bool = False, profile: Path | None = None,
                      native: bool = False) -> dict[str, Any]:
    count = int(rate * seconds)
    result: dict[str, Any] = {"clients": clients, "rate": rate, "events": count}
    stuck_client: StuckClient | None = None
    if stuck:
        stuck_client = StuckClient(target.port, bearer=TOKEN)
        result["stuck_prefill"] = await publish(target.feed, 1.0, STUCK_PREFILL, LOAD_CORE,
                                                burst=True)
        await asyncio.sleep(1.0)
        result["stuck_before"] = {
            "unread_bytes": stuck_client.unread_bytes(),
            "server_send_queue": server_send_queue(target.port, stuck_client.local_port)}
    client = LoadClient(ref, target.url, clients, TOKEN, seconds + 120, LOAD_CORE)
    await client.start()
    try:
        result["ready"] = await client.wait_ready(60 + clients / 100)
        await asyncio.sleep(0.5)
        cpu0, wall0 = _procs.cpu_seconds(target.proc.pid), time.monotonic()
        cores0 = _procs.core_times()
        spy = None
        if profile is not None:
            spy = await asyncio.create_subprocess_exec(
                "taskset", "-c", str(LOAD_CORE), py_spy(), "record", "--pid",
                str(target.proc.pid), "--duration", str(int(seconds)), "--rate", "200",
                "--format", "raw", "--output", str(profile),
                # Native unwinding must pause the process; otherwise sample without pausing.
                *(["--native"] if native else ["--nonblocking"]),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        poller = asyncio.create_task(poll_stuck(stuck_client), name="stuck poller")
        try:
            result["publisher"] = await publish(target.feed, rate, count, LOAD_CORE)
            # Delivery is judged against the connections that opened; failed ones are
            # reported on their own (record()).
            expected = result["publisher"]["sent"] * result["ready"]["connected"]
            result["drain_s"] = await client.wait_delivered(expected)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        cpu1, wall1 = _procs.cpu_seconds(target.proc.pid), time.monotonic()
        busy = _procs.core_pct(cores0, _procs.core_times())
        if spy is not None:
            _, spy_err = await spy.communicate()
            if spy.returncode != 0:
                result["profile_error"] = spy_err.decode(errors="replace")[-500:]
        result["rss_mb"] = _procs.rss_bytes(target.proc.pid) / 2**20
        if stuck_client is not None:
            stuck_client.poll()
            result["stuck"] = {
                "closed": stuck_client.closed_after is not None,
                "closed_after_s": stuck_client.closed_after,
                "tcp_state": stuck_client.state(),
                "unread_bytes": stuck_client.unread_bytes(),
                "server_send_queue": server_send_queue(target.port, stuck_client.local_port)}
    finally:
        summary = await client.finish()
        if stuck_client is not None:
            stuck_client.close()
    delivered = summary["total"]
    lat = summary["lat_us"]
    cpu = cpu1 - cpu0
    result.update({
        "expected": expected, "delivered": delivered,
        "delivered_pct": 100.0 * delivered / expected if expected else None,
        "window_s": wall1 - wall0, "server_cpu_s": cpu,
        "server_core_pct": 100.0 * cpu / (wall1 - wall0),
        # Other work on the server core (the machine may be shared), and how busy the
        # load core was: near 100 % there means the client, not the server, set the pace.
        # Loopback TCP delivery runs in softirq, charged to whichever process is on the core
        # (if any): shown apart, with the core's total, so other work on it is visible.
        "core0_busy_pct": busy[SERVER_CORE][0],
        "core0_softirq_pct": busy[SERVER_CORE][1],
        "load_core_pct": busy[LOAD_CORE][0],
        "cpu_us_per_msg": 1e6 * cpu / delivered if delivered else None,
        "p50_ms": ms(lat["p50"]), "p90_ms": ms(lat["p90"]), "p99_ms": ms(lat["p99"]),
        "p999_ms": ms(lat["p999"]), "max_ms": ms(lat["max"]),
        "bytes_per_msg": summary["bytes"] / delivered if delivered else None,
        "client_cpu_s": summary["cpu_user_s"] + summary["cpu_sys_s"],
        "client_core_pct": 100.0 * (summary["cpu_user_s"] + summary["cpu_sys_s"])
        / client.lifetime,
        "client_closed": summary["closed"], "client_failed": summary["failed"],
        "per_conn_min": summary["per_conn_min"], "per_conn_max": summary["per_conn_max"],
        "client_summary": {k: v for k, v in summary.items() if k != "timeline"},
        "timeline_100ms": summary.get("timeline"),
    })
    return result


async def poll_stuck(stuck: StuckClient | None) -> None:
    if stuck is None:
        return
    while True:
        stuck.poll()
        await asyncio.sleep(0.1)


async def run_idle(target: Target, ref: _reference.Reference, n: int) -> dict[str, Any]:
    def rss_median() -> float:
        samples = []
        for _ in range(5):
            samples.append(_procs.rss_bytes(target.proc.pid))
            time.sleep(0.1)
        return float(statistics.median(samples))

    before = rss_median()
    client = LoadClient(ref, target.url, n, TOKEN, 240, LOAD_CORE)
    await client.start()
    try:
        ready = await client.wait_ready(180)
        await asyncio.sleep(2.0)
        after = rss_median()
        registered = server_clients(target)
    finally:
        await client.finish()
    connected = ready["connected"]
    return {"connections": n, "connected": connected, "failed": ready["failed"],
            "connect_s": ready["connect_s"], "server_reports_clients": registered,
            "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20,
            "kb_per_conn": (after - before) / connected / 1024 if connected else None}


async def run_flood(target: Target) -> dict[str, Any]:
    """A viewer sends pings and snapshot requests as fast as the server takes them, and
    never reads; the server's RSS is sampled every 50 ms, and the client's TCP state tells
    when the server closed the connection."""
    import redis

    seed = redis.Redis.from_url(target.redis.url)
    for n in range(FLOOD_NODES):
        seed.sadd("pic:nodes", f"pi-{n}")
        seed.hset(f"pic:node:pi-{n}", mapping={"status": "ready",
                                            "hostname": "x" * FLOOD_NODE_BYTES})
    seed.close()
    rss_before = _procs.rss_bytes(target.proc.pid)
    stuck = StuckClient(target.port, bearer=TOKEN)
    ping = _stuck.masked_frame(0x9, b"p" * 125)
    snapshot = _stuck.masked_frame(0x1, json.dumps(
        {"op": "subscribe", "snapshot": True}).encode())
    chunk = (ping + snapshot) * 100
    stuck.sock.setblocking(False)
    sent = 0
    peak = rss_before
    started = time.monotonic()
    pending = memoryview(chunk)
    while time.monotonic() - started < FLOOD_WINDOW:
        try:
            taken = stuck.sock.send(pending)
            sent += taken
            pending = pending[taken:] or memoryview(chunk)  # never a frame cut in two
        except BlockingIOError:
            await asyncio.sleep(0.005)  # the server stopped reading: it may not close yet
        except OSError:
            pass  # reset: closed
        peak = max(peak, _procs.rss_bytes(target.proc.pid))
        stuck.poll()
        if stuck.closed_after is not None:
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0.5)
    peak = max(peak, _procs.rss_bytes(target.proc.pid))
    result = {"flood_sent_kb": sent / 1024, "rss_growth_mb": (peak - rss_before) / 2**20,
              "closed": stuck.closed_after is not None, "closed_after_s": stuck.closed_after,
              "tcp_state": stuck.state()}
    stuck.close()
    return result


def server_clients(target: Target) -> int | None:
    if target.kind == "node":
        return None
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{target.port}/readyz", timeout=5) as reply:
        return int(json.loads(reply.read())["clients"])


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def top_frames(raw: Path, limit: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of a py-spy ``--format raw`` (collapsed stacks) profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {"samples": [("total", float(total))],
            "self": [(f, 100.0 * c / total) for f, c in own.most_common(limit)],
            "inclusive": [(f, 100.0 * c / total) for f, c in inclusive.most_common(limit)]}


# --- summary and table ------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(statistics.median(values)) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    keys = ("rss_growth_mb", "closed_after_s", "flood_sent_kb",
            "cpu_us_per_msg", "delivered_pct", "p50_ms", "p99_ms", "p999_ms", "max_ms",
            "server_core_pct", "core0_busy_pct", "core0_softirq_pct", "load_core_pct",
            "client_cpu_s", "client_core_pct",
            "bytes_per_msg", "kb_per_conn", "connect_s",
            "rss_after_mb", "rss_mb", "client_closed")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        scenario = str(run["scenario"])
        out.setdefault(scenario, {}).setdefault(run["server"], {"runs": []})["runs"].append(run)
    for servers in out.values():
        for entry in servers.values():
            rs = entry.pop("runs")
            entry["reps"] = len(rs)
            for key in keys:
                value = median_of(rs, key)
                if value is not None:
                    entry[key] = value
            stuck = [r["stuck"] for r in rs if "stuck" in r]
            if stuck:
                entry["stuck_closed"] = f"{sum(s['closed'] for s in stuck)}/{len(stuck)}"
                closed_after = [s["closed_after_s"] for s in stuck if s["closed"]]
                if closed_after:
                    entry["stuck_closed_after_s"] = statistics.median(closed_after)
    # Scenario 5's baseline is scenario 1 of the same run: the same load, nobody stuck.
    for server, entry in out.get("5", {}).items():
        base = out.get("1", {}).get(server, {}).get("p99_ms")
        entry["baseline_p99_ms"] = base
        if base and entry.get("p99_ms") is not None:
            entry["p99_vs_baseline"] = entry["p99_ms"] / base
    return out


ROWS: dict[int, list[tuple[str, str]]] = {
    1: [("cpu_us_per_msg", "server CPU us/msg"), ("server_core_pct", "server core %"),
        ("delivered_pct", "delivered %"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("bytes_per_msg", "bytes/msg"), ("core0_softirq_pct", "softirq on core 0 %"),
        ("core0_busy_pct", "core 0 busy %"),
        ("load_core_pct", "load core busy %"), ("client_core_pct", "load client core %")],
    2: [("delivered_pct", "delivered %"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"), ("cpu_us_per_msg", "server CPU us/msg"),
        ("server_core_pct", "server core %"), ("core0_softirq_pct", "softirq on core 0 %"),
        ("core0_busy_pct", "core 0 busy %"),
        ("load_core_pct", "load core busy %"), ("client_core_pct", "load client core %")],
    3: [("delivered_pct", "delivered %"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"), ("cpu_us_per_msg", "server CPU us/msg"),
        ("server_core_pct", "server core %"), ("core0_softirq_pct", "softirq on core 0 %"),
        ("core0_busy_pct", "core 0 busy %"),
        ("load_core_pct", "load core busy %"), ("client_core_pct", "load client core %")],
    4: [("kb_per_conn", "KB per connection"), ("rss_after_mb", "RSS MB (10k conns)"),
        ("connect_s", "connect s")],
    5: [("p99_ms", "p99 ms, one stuck"), ("baseline_p99_ms", "p99 ms, none stuck"),
        ("p99_vs_baseline", "stuck/none p99"), ("delivered_pct", "delivered %"),
        ("stuck_closed", "stuck closed"), ("stuck_closed_after_s", "closed after s"),
        ("rss_mb", "server RSS MB")],
    6: [("rss_growth_mb", "server RSS growth MB"), ("closed_after_s", "closed after s"),
        ("flood_sent_kb", "flood taken KB")],
}
TITLES = {
    1: "1: 1,000 clients x 60 ev/s (target: ours CPU/msg <= 0.67x node)",
    2: "2: 1,000 clients x 100 ev/s (target: all delivered, ours p99 <= 1.0x node)",
    3: "3: 100 clients x 1,000 ev/s (target: p99 < 10 ms)",
    4: f"4: {IDLE_CONNECTIONS:,} idle authenticated connections (target: <= 12 KB each)",
    5: "5: 1,000 x 60 with one client that never reads (target: p99 within 1.2x of none)",
    6: "6: one client floods pings and snapshots, never reads (target: RSS < +8 MB, closed "
       "within 5 s)",
}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(summary: dict[str, dict[str, dict[str, Any]]], servers: list[str]) -> str:
    lines: list[str] = []
    for number in sorted(int(k) for k in summary):
        data = summary[str(number)]
        shown = [s for s in servers if s in data]
        ratios = [(f"{s}/node", s, "node") for s in shown if s != "node" and "node" in data]
        if "before" in data and "ours" in data:
            ratios.append(("ours/before", "ours", "before"))
        reps = max(e["reps"] for e in data.values())
        lines.append(f"\nScenario {TITLES[number]}   [median of {reps}]")
        header = f"  {'':24}" + "".join(f"{s:>11}" for s in shown) + "".join(
            f"{label:>13}" for label, _, _ in ratios)
        lines.append(header)
        for key, label in ROWS[number]:
            row = f"  {label:24}" + "".join(f"{fmt(data[s].get(key)):>11}" for s in shown)
            for _, mine_of, theirs_of in ratios:
                mine, theirs = data[mine_of].get(key), data[theirs_of].get(key)
                numeric = isinstance(mine, int | float) and isinstance(theirs, int | float)
                ratio = fmt(mine / theirs) + "x" if numeric and theirs else "-"
                row += f"{ratio:>13}"
            lines.append(row)
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="1,2,3,4,5,6", help="scenarios, e.g. 1,2")
    parser.add_argument("--servers", default="ours,node,naive",
                        help="of ours,before,node,naive")
    parser.add_argument("--seconds", type=float, default=6.0, help="publishing time per run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of scenarios 1,2,3,5")
    parser.add_argument("--nice", type=int, default=-10,
                        help="niceness (and autogroup niceness) of everything started, so a "
                        "shared machine's other work disturbs the runs less; root for < 0")
    parser.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS)
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, one extra scenario-1 run of ours under py-spy")
    parser.add_argument("--native", action="store_true",
                        help="with --profile: include C frames (uvloop, msgspec, libc)")
    parser.add_argument("--redis-core", type=int, default=LOAD_CORE,
                        help="core for the redis-servers (default: the load core; on the "
                        "server core Redis's wake-ups distort the server's latency)")
    parser.add_argument("--reference-dir", type=Path, default=_reference.DEFAULT_DIR)
    parser.add_argument("--reference-cache", type=Path, default=_reference.DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser.parse_args()


def meta(args: argparse.Namespace, ref: _reference.Reference) -> dict[str, Any]:
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "?")
    return {"command": " ".join([sys.executable, *sys.argv]), "started": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "server_core": SERVER_CORE, "load_core": LOAD_CORE, "redis_core": args.redis_core,
            "python": platform.python_version(), "node": run(ref.node, "--version"),
            "redis": run("redis-server", "--version"), "git": run("git", "-C", str(REPO),
                                                                   "rev-parse", "HEAD"),
            "seconds": args.seconds, "reps": args.reps, "nice": os.nice(0),
            "autogroup": Path("/proc/self/autogroup").read_text().strip()
            if Path("/proc/self/autogroup").exists() else None,
            "fd_limit": _procs.raise_fd_limit()}


async def main_async(args: argparse.Namespace) -> int:
    scenarios = [int(s) for s in args.only.split(",") if s.strip()]
    if 5 in scenarios and 1 not in scenarios:
        scenarios.append(1)  # scenario 5's baseline: the same load with nobody stuck
    servers = [s for s in args.servers.split(",") if s.strip()]
    if bad := [s for s in scenarios if s not in TITLES] + [s for s in servers
                                                          if s not in SERVERS]:
        raise SystemExit(f"unknown scenario or server: {bad}")
    # Everything this script starts inherits core 1 unless pinned to the server core.
    os.sched_setaffinity(0, {LOAD_CORE})
    _procs.raise_priority(args.nice)
    ref = _reference.prepare(args.reference_dir, args.reference_cache)
    info = meta(args, ref)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    workdir = args.results / f"fanout-{stamp}"
    out_path = args.results / f"fanout-{stamp}.json"
    targets: dict[str, Target] = {}
    runs: list[dict[str, Any]] = []
    anomalies: list[str] = []
    profile: dict[str, Any] | None = None
    started = time.monotonic()

    def record(run: dict[str, Any], target: Target) -> None:
        noise = target.new_log_lines()
        if noise:
            run["log_lines"] = noise[:20]
            run["log_line_count"] = len(noise)
        runs.append(run)
        line = ", ".join(f"{k} {fmt(run.get(k))}" for k in (
            "delivered_pct", "cpu_us_per_msg", "p50_ms", "p99_ms", "kb_per_conn",
            "rss_growth_mb", "closed_after_s")
            if run.get(k) is not None)
        print(f"  [{run['scenario']} {run['server']} rep {run['rep']}] {line}"
              + (f"; stuck {run['stuck']}" if "stuck" in run else "")
              + (f"; {len(noise)} log lines" if noise else ""), flush=True)
        if run.get("delivered_pct") is not None and run["delivered_pct"] < 100.0:
            anomalies.append(f"scenario {run['scenario']} {run['server']} rep {run['rep']}: "
                             f"{run['delivered']:,} of {run['expected']:,} delivered")
        if run.get("ready", {}).get("failed") or run.get("failed"):
            failed = run.get("ready", {}).get("failed") or run.get("failed")
            anomalies.append(f"scenario {run['scenario']} {run['server']} rep {run['rep']}: "
                             f"{failed} connections failed to open")
        if run.get("client_closed"):
            anomalies.append(f"scenario {run['scenario']} {run['server']} rep {run['rep']}: "
                             f"server closed {run['client_closed']} load connections")

    try:
        for kind in servers:
            targets[kind] = start_target(kind, workdir, ref, args.redis_core)
        print(f"servers on core {SERVER_CORE}: " + ", ".join(
            f"{k} pid {t.proc.pid} port {t.port}" for k, t in targets.items())
            + f"; load on core {LOAD_CORE}; results {out_path}", flush=True)
        if 4 in scenarios:
            print(f"scenario {TITLES[4]}", flush=True)
            for kind in servers:
                if busy := await settle(list(targets.values())):
                    anomalies.append(f"before scenario 4 {kind}: still busy: {busy}")
                run = {"scenario": 4, "server": kind, "rep": 1,
                       **await run_idle(targets[kind], ref, args.idle_connections)}
                record(run, targets[kind])
        if 6 in scenarios:
            print(f"scenario {TITLES[6]}", flush=True)
            for rep in range(1, args.reps + 1):
                for kind in [k for k in servers if k in OURS]:
                    if busy := await settle(list(targets.values())):
                        anomalies.append(f"before scenario 6 {kind}: still busy: {busy}")
                    run = {"scenario": 6, "server": kind, "rep": rep,
                           **await run_flood(targets[kind])}
                    record(run, targets[kind])
        for rep in range(1, args.reps + 1):
            for number in (n for n in (1, 2, 3, 5) if n in scenarios):
                clients, rate = TRAFFIC[number]
                print(f"scenario {TITLES[number]} rep {rep}", flush=True)
                order = servers[rep - 1:] + servers[:rep - 1]
                for kind in order:
                    if busy := await settle(list(targets.values())):
                        anomalies.append(f"before scenario {number} {kind}: busy: {busy}")
                    result = await run_traffic(targets[kind], ref, clients=clients, rate=rate,
                                               seconds=args.seconds, stuck=number == 5)
                    record({"scenario": number, "server": kind, "rep": rep, **result},
                           targets[kind])
        if args.profile and "ours" in targets:
            await settle(list(targets.values()))
            raw = workdir / "ours-scenario1.pyspy.txt"
            clients, rate = TRAFFIC[1]
            print("profiling ours at scenario 1 (py-spy, not counted)", flush=True)
            result = await run_traffic(targets["ours"], ref, clients=clients, rate=rate,
                                       seconds=args.seconds, profile=raw,
                                       native=args.native)
            if raw.exists():
                profile = {"raw": str(raw), "run": {k: result.get(k) for k in (
                    "cpu_us_per_msg", "p99_ms", "delivered_pct")}, **top_frames(raw)}
            else:
                anomalies.append(f"py-spy failed: {result.get('profile_error', '?')}")
    finally:
        for target in targets.values():
            target.proc.stop()
            target.redis.stop()
        info["elapsed_s"] = time.monotonic() - started
        summary = summarize(runs)
        out_path.write_text(json.dumps({"meta": info, "summary": summary, "anomalies": anomalies,
                                        "profile": profile, "runs": runs}, indent=1))
    print(table(summary, servers))
    if profile:
        print("\nProfile of ours at scenario 1 (py-spy, % of samples):")
        for kind in ("self", "inclusive"):
            print(f"  {kind}:")
            for frame, share in profile[kind]:
                print(f"    {share:5.1f}%  {frame}")
    if anomalies:
        print("\nAnomalies:\n  " + "\n  ".join(anomalies))
    print(f"\nelapsed {info['elapsed_s']:.0f} s; raw results {out_path}; logs {workdir}")
    return 0


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
