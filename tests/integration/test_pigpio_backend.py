"""The real ``pigpio`` client, and our PigpioBackend on top of it, against a pigpiod server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pigpio
import pytest

from agent.gpio.backend import BackendError
from agent.gpio.pigpio_backend import PigpioBackend
from tests.support import pigpiod
from tests.support.pigpiod import FakePigpiod
from tests.support.waiting import wait_until


@pytest.fixture
async def daemon() -> AsyncIterator[FakePigpiod]:
    async with FakePigpiod() as server:
        yield server


@pytest.fixture
async def pi(daemon: FakePigpiod) -> AsyncIterator[Any]:
    client = await asyncio.to_thread(pigpio.pi, "127.0.0.1", daemon.port, False)
    assert client.connected
    yield client
    await asyncio.to_thread(client.stop)


@pytest.fixture
async def backend(daemon: FakePigpiod) -> AsyncIterator[PigpioBackend]:
    gpio = PigpioBackend("127.0.0.1", daemon.port, timeout=2.0)
    await gpio.open()
    yield gpio
    await gpio.close()


def call(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


# --- the pigpio client against the server --------------------------------------------------


async def test_client_modes_writes_and_reads(pi: Any, daemon: FakePigpiod) -> None:
    assert await call(pi.get_pigpio_version) == pigpiod.PIGPIO_VERSION
    assert await call(pi.get_hardware_revision) == pigpiod.HW_REVISION
    await call(pi.set_mode, 17, pigpio.OUTPUT)
    assert await call(pi.get_mode, 17) == pigpio.OUTPUT
    await call(pi.write, 17, 1)
    assert daemon.level(17) == 1 and await call(pi.read, 17) == 1
    await call(pi.write, 17, 0)
    assert daemon.level(17) == 0
    assert daemon.writes == [(17, 1), (17, 0)]
    await call(pi.set_mode, 4, pigpio.INPUT)
    await call(pi.set_pull_up_down, 4, pigpio.PUD_UP)
    assert await call(pi.read, 4) == 1
    daemon.inject(4, 0)
    assert await call(pi.read, 4) == 0
    assert await call(pi.read_bank_1) & (1 << 4) == 0


async def test_client_errors_are_pigpiods(pi: Any) -> None:
    with pytest.raises(pigpio.error, match="GPIO not 0-53"):
        await call(pi.set_mode, 60, pigpio.OUTPUT)
    with pytest.raises(pigpio.error, match="GPIO not 0-31"):
        await call(pi.set_PWM_dutycycle, 40, 10)
    with pytest.raises(pigpio.error, match="level not 0-1"):
        await call(pi.write, 17, 2)
    with pytest.raises(pigpio.error, match="not in use for PWM"):
        await call(pi.get_PWM_dutycycle, 22)
    with pytest.raises(pigpio.error, match="hardware PWM"):
        await call(pi.hardware_PWM, 17, 1000, 500_000)
    with pytest.raises(pigpio.error, match="pulsewidth"):
        await call(pi.set_servo_pulsewidth, 17, 3000)


async def test_client_software_and_hardware_pwm_and_servo(pi: Any, daemon: FakePigpiod) -> None:
    assert await call(pi.set_PWM_frequency, 22, 1100) == 1000  # the closest it can do
    await call(pi.set_PWM_range, 22, 1000)
    await call(pi.set_PWM_dutycycle, 22, 250)
    assert await call(pi.get_PWM_dutycycle, 22) == 250
    assert await call(pi.get_PWM_frequency, 22) == 1000
    with pytest.raises(pigpio.error, match="dutycycle"):
        await call(pi.set_PWM_dutycycle, 22, 1001)
    await call(pi.hardware_PWM, 18, 25_000, 750_000)
    assert (daemon.pin(18).hw_frequency, daemon.pin(18).hw_duty) == (25_000, 750_000)
    assert await call(pi.get_PWM_dutycycle, 18) == 750_000
    await call(pi.set_servo_pulsewidth, 23, 1500)
    assert await call(pi.get_servo_pulsewidth, 23) == 1500


async def test_client_callbacks_hear_injected_edges(pi: Any, daemon: FakePigpiod) -> None:
    heard: list[tuple[int, int]] = []
    await call(pi.set_mode, 5, pigpio.INPUT)
    callback = await call(pi.callback, 5, pigpio.EITHER_EDGE,
                          lambda gpio, level, tick: heard.append((gpio, level)))
    assert daemon.watched(5)
    daemon.inject(5, 1)
    daemon.inject(6, 1)  # not watched: no callback
    daemon.inject(5, 0)
    await wait_until(lambda: len(heard) == 2, 5, what="two edges")
    assert heard == [(5, 1), (5, 0)]
    await call(callback.cancel)
    assert not daemon.watched(5)


# --- PigpioBackend --------------------------------------------------------------------------


async def test_backend_output_input_and_pwm(backend: PigpioBackend, daemon: FakePigpiod) -> None:
    await backend.set_mode(17, "output", "none")
    await backend.write(17, 1)
    assert daemon.mode(17) == pigpiod.OUTPUT and daemon.level(17) == 1
    assert await backend.read(17) == 1

    await backend.set_mode(22, "pwm", "none")
    await backend.set_pwm(22, 37.5, 400)
    pin = daemon.pin(22)
    assert (pin.pwm_frequency, pin.pwm_range, pin.pwm_duty) == (400, 1000, 375)
    assert pin.hw_frequency == 0  # BCM 22 has no hardware PWM: software PWM

    await backend.set_pwm(12, 20, 20_000)  # BCM 12 has it: hardware PWM
    assert (daemon.pin(12).hw_frequency, daemon.pin(12).hw_duty) == (20_000, 200_000)
    assert daemon.mode(12) == pigpiod.ALT0

    await backend.set_pwm(13, 50, None)  # no frequency given: software PWM
    assert daemon.pin(13).hw_frequency == 0 and daemon.pin(13).pwm_duty == 500

    await backend.set_servo(23, 1200)
    assert daemon.pin(23).servo == 1200


async def test_backend_turns_pigpiod_errors_into_backend_errors(
        backend: PigpioBackend, daemon: FakePigpiod) -> None:
    with pytest.raises(BackendError, match=r"refused set_mode\(60"):
        await backend.set_mode(60, "output", "none")
    await backend.write(17, 1)  # the connection is still good


async def test_backend_debounces_input_edges(backend: PigpioBackend,
                                             daemon: FakePigpiod) -> None:
    loop = asyncio.get_running_loop()
    heard: list[tuple[int, int, bool]] = []

    def on_edge(pin: int, level: int) -> None:
        assert asyncio.get_running_loop() is loop  # delivered on the loop, not pigpio's thread
        heard.append((pin, level, True))

    await backend.set_mode(5, "input", "down")
    await backend.watch(5, 0, on_edge)
    await backend.set_mode(6, "input", "down")
    await backend.watch(6, 150, on_edge)
    assert daemon.watched(5) and daemon.watched(6)

    daemon.inject(5, 1)
    await wait_until(lambda: (5, 1, True) in heard, 5, what="edge on 5")
    # A bounce on 6: three changes within the debounce time settle at 1, reported once.
    for level in (1, 0, 1):
        daemon.inject(6, level)
    await wait_until(lambda: any(p == 6 for p, _, _ in heard), 5, what="settled edge on 6")
    daemon.inject(5, 0)
    await wait_until(lambda: (5, 0, True) in heard, 5, what="second edge on 5")
    assert [h for h in heard if h[0] == 6] == [(6, 1, True)]

    await backend.unwatch(5)
    assert not daemon.watched(5)


async def test_backend_survives_pigpiod_being_away(tmp_path: object) -> None:
    server = FakePigpiod()
    await server.start()
    port = server.port
    await server.stop()
    backend = PigpioBackend("127.0.0.1", port, timeout=2.0)
    await backend.open()  # logs, does not raise
    try:
        with pytest.raises(BackendError, match="not reachable"):
            await backend.write(17, 1)
        async with FakePigpiod(port=port) as again:
            await backend.write(17, 1)  # reconnects
            assert again.level(17) == 1
            await backend.close()
    finally:
        await backend.close()


async def test_backend_gives_up_on_a_stalled_pigpiod(daemon: FakePigpiod) -> None:
    backend = PigpioBackend("127.0.0.1", daemon.port, timeout=0.3)
    await backend.open()
    try:
        stall = daemon.stall_write(17)
        with pytest.raises(BackendError, match="did not answer"):
            await backend.write(17, 1)
        assert stall.reached.is_set()
        await wait_until(lambda: stall.dropped, 5, what="the stalled connection to close")
        assert daemon.level(17) == 0
        await backend.write(17, 1)  # a fresh connection
        assert daemon.level(17) == 1
    finally:
        await backend.close()


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    import threading

    before = {t.ident for t in threading.enumerate()}
    yield

    def settled() -> bool:
        return not [t for t in threading.enumerate()
                    if t.ident not in before and t.name.startswith("Thread-")
                    and type(t).__name__ == "_callback_thread"]

    import time

    deadline = time.monotonic() + 5
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert settled(), "a pigpio notification thread outlived its client"


async def test_close_does_not_wait_for_a_stalled_pigpiod(daemon: FakePigpiod) -> None:
    backend = PigpioBackend("127.0.0.1", daemon.port, timeout=30.0)
    await backend.open()
    stall = daemon.stall_write(17)
    write = asyncio.create_task(backend.write(17, 1))
    await wait_until(stall.reached.is_set, 5, what="the WRITE to stall")
    write.cancel()  # as the agent's shutdown cancels its tasks
    async with asyncio.timeout(3):
        await backend.close()
    # The sockets were closed under the blocked thread, so it ends and the process can exit.
    await wait_until(lambda: stall.dropped, 5, what="the stalled connection to close")
    assert daemon.level(17) == 0
