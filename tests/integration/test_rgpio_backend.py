"""The real ``rgpio`` client, and our RgpioBackend on top of it, against an rgpiod server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import rgpio

from agent.gpio.backend import BackendError
from agent.gpio.rgpio_backend import RgpioBackend
from tests.support.rgpiod import FakeRgpiod
from tests.support.waiting import wait_until


@pytest.fixture
async def daemon() -> AsyncIterator[FakeRgpiod]:
    async with FakeRgpiod() as server:
        yield server


@pytest.fixture
async def sbc(daemon: FakeRgpiod) -> AsyncIterator[Any]:
    client = await asyncio.to_thread(rgpio.sbc, "127.0.0.1", daemon.port, False)
    assert client.connected
    yield client
    await asyncio.to_thread(client.stop)


@pytest.fixture
async def backend(daemon: FakeRgpiod) -> AsyncIterator[RgpioBackend]:
    gpio = RgpioBackend("127.0.0.1", daemon.port, timeout=2.0)
    await gpio.open()
    yield gpio
    await gpio.close()


def call(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


async def test_client_claims_writes_reads_pwm_servo(sbc: Any, daemon: FakeRgpiod) -> None:
    assert await call(sbc.get_sbc_name) == b"pi5-test"
    chip = await call(sbc.gpiochip_open, 0)
    await call(sbc.gpio_claim_output, chip, 17, 1)
    assert daemon.level(17) == 1 and daemon.line(17).kind == "output"
    await call(sbc.gpio_write, chip, 17, 0)
    assert await call(sbc.gpio_read, chip, 17) == 0
    await call(sbc.gpio_claim_input, chip, 4, rgpio.SET_PULL_UP)
    assert await call(sbc.gpio_read, chip, 4) == 1
    await call(sbc.gpio_claim_output, chip, 22, 0)
    await call(sbc.tx_pwm, chip, 22, 1000, 25.5)
    assert daemon.line(22).pwm == (1000, 25.5)
    await call(sbc.gpio_claim_output, chip, 23, 0)
    await call(sbc.tx_servo, chip, 23, 1500, 50)
    assert daemon.line(23).servo == (1500, 50)


async def test_client_errors_are_lgpios(sbc: Any, daemon: FakeRgpiod) -> None:
    with pytest.raises(rgpio.error, match="gpiochip"):
        await call(sbc.gpiochip_open, 7)
    chip = await call(sbc.gpiochip_open, 0)
    with pytest.raises(rgpio.error, match="not allocated"):
        await call(sbc.gpio_write, chip, 17, 1)
    await call(sbc.gpio_claim_input, chip, 5, 0)
    with pytest.raises(rgpio.error, match="not set as an output"):
        await call(sbc.gpio_write, chip, 5, 1)
    await call(sbc.gpio_claim_output, chip, 22, 0)
    with pytest.raises(rgpio.error, match="PWM frequency"):
        await call(sbc.tx_pwm, chip, 22, 25_000, 50)
    with pytest.raises(rgpio.error):
        await call(sbc.gpio_claim_output, chip, 60, 0)


async def test_client_alerts_reach_callbacks(sbc: Any, daemon: FakeRgpiod) -> None:
    heard: list[tuple[int, int]] = []
    chip = await call(sbc.gpiochip_open, 0)
    await call(sbc.gpio_claim_alert, chip, 5, rgpio.BOTH_EDGES, rgpio.SET_PULL_DOWN)
    callback = await call(sbc.callback, chip, 5, rgpio.BOTH_EDGES,
                          lambda _c, gpio, level, _t: heard.append((gpio, level)))
    assert daemon.watched(5)
    daemon.inject(5, 1)
    daemon.inject(5, 0)
    await wait_until(lambda: heard == [(5, 1), (5, 0)], 5, what="two alerts")
    callback.cancel()


async def test_backend_drives_outputs_without_a_glitch(backend: RgpioBackend,
                                                       daemon: FakeRgpiod) -> None:
    await backend.set_mode(17, "output", "none")
    assert daemon.line(17).kind == "free"  # claimed on the first write, at its level
    await backend.write(17, 1)
    assert daemon.writes == [(17, 1)] and daemon.level(17) == 1
    await backend.write(17, 0)
    assert daemon.writes == [(17, 1), (17, 0)]
    assert await backend.read(17) == 0
    await backend.set_pwm(18, 40, 25_00)
    assert daemon.line(18).pwm == (2500, 40)
    await backend.set_pwm(13, 10, None)
    assert daemon.line(13).pwm == (800, 10)
    await backend.set_servo(23, 1200)
    assert daemon.line(23).servo == (1200, 50)
    with pytest.raises(BackendError, match=r"refused tx_pwm\(12, 25000 Hz"):
        await backend.set_pwm(12, 50, 25_000)  # no hardware PWM through rgpiod


async def test_backend_inputs_with_debounce(backend: RgpioBackend, daemon: FakeRgpiod) -> None:
    heard: list[tuple[int, int]] = []
    await backend.watch(5, 100, lambda pin, level: heard.append((pin, level)))
    await backend.set_mode(5, "input", "up")
    assert daemon.watched(5) and await backend.read(5) == 1
    for level in (0, 1, 0):
        daemon.inject(5, level)
    await wait_until(lambda: heard, 5, what="a settled edge")
    assert heard == [(5, 0)]
    await backend.unwatch(5)
    await backend.set_mode(5, "output", "none")
    await backend.write(5, 1)
    assert daemon.line(5).kind == "output" and daemon.level(5) == 1


async def test_backend_errors_and_reconnects(daemon: FakeRgpiod) -> None:
    daemon.refuse(24)
    backend = RgpioBackend("127.0.0.1", daemon.port, timeout=2.0, health_interval=0.1)
    reconnected: list[bool] = []
    backend.on_reconnect(lambda: reconnected.append(True))
    await backend.open()
    try:
        with pytest.raises(BackendError, match="not permitted"):
            await backend.write(24, 1)
        port = daemon.port
        await daemon.stop()
        await wait_until(lambda: not backend.connected, 5, what="the loss noticed")
        async with FakeRgpiod(port=port) as again:
            await wait_until(lambda: reconnected, 5, what="reconnected")
            await backend.write(17, 1)
            assert again.level(17) == 1
    finally:
        await backend.close()


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield

    def stray() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.ident not in before
                and type(t).__name__ == "_callback_thread"]

    deadline = time.monotonic() + 5
    while stray() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not stray(), "an rgpio notification thread outlived its client"
