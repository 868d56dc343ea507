"""The load side (core 1): the Node load client, the publisher, and waiting on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _reference import Reference

PUBLISHER = Path(__file__).resolve().parent / "_publisher.py"
AGENT_PUBLISHER = Path(__file__).resolve().parent / "_agent_publisher.py"
"""Format "agent": events written through the agent's own outbox (bench_pipeline.py)."""


@dataclass(frozen=True)
class Feed:
    """Where a server reads its events, and in which format the publisher writes them."""

    redis_url: str
    stream: str
    field: str
    format: str
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the publisher (which tree's product code it imports)."""


async def publish(feed: Feed, rate: float, count: int, core: int, *, burst: bool = False
                  ) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", str(core), sys.executable,
        str(AGENT_PUBLISHER if feed.format == "agent" else PUBLISHER), "--redis-url",
        feed.redis_url, "--stream", feed.stream, "--field", feed.field, "--format", feed.format,
        "--rate", str(rate), "--count", str(count), *(["--burst"] if burst else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **feed.env})
    async with asyncio.timeout(count / rate + 30):
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"publisher failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@dataclass
class LoadClient:
    """``ws-load-client.js --mode raw`` with N connections; its JSON lines parsed as they come."""

    ref: Reference
    url: str
    n: int
    bearer: str
    max_seconds: float
    core: int
    proc: asyncio.subprocess.Process | None = None
    ready: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    stderr: bytes = b""
    _ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    started: float = 0.0
    lifetime: float = 0.0

    async def start(self) -> None:
        args = ["taskset", "-c", str(self.core), self.ref.node, str(self.ref.client),
                "--url", self.url, "--n", str(self.n), "--mode", "raw",
                "--max-seconds", str(int(self.max_seconds)), "--progress-ms", "100"]
        if self.bearer:
            args += ["--bearer", self.bearer]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.ref.env}, limit=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read(), name="load client output")
        self.started = time.monotonic()

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            kind = message.get("ev")
            if kind == "ready":
                self.ready = message
                self._ready_event.set()
            elif kind == "progress":
                self.progress = message
            elif kind == "summary":
                self.summary = message
        self._ready_event.set()

    async def wait_ready(self, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            await self._ready_event.wait()
        if self.ready is None:
            await self.finish()
            raise RuntimeError(f"load client exited before ready: {self.stderr[-2000:]!r}")
        return self.ready

    @property
    def received(self) -> int:
        return int(self.progress.get("recv", 0))

    async def wait_delivered(self, expected: int, *, quiet: float = 2.0,
                             cap: float = 10.0) -> float:
        """Until ``expected`` messages arrived, nothing arrived for ``quiet`` s, or ``cap`` s."""
        start = last_change = time.monotonic()
        seen = self.received
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if self.received >= expected:
                return now - start
            if self.received != seen:
                seen, last_change = self.received, now
            if now - last_change > quiet or now - start > cap:
                return now - start

    async def finish(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                assert self.proc.stderr is not None
                self.stderr = await self.proc.stderr.read()
                await self.proc.wait()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.lifetime = time.monotonic() - self.started
        if self.summary is None:
            raise RuntimeError(f"load client gave no summary: {self.stderr[-2000:]!r}")
        return self.summary

