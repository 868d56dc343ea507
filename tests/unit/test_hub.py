"""Fan-out with an injected transport: one write per client per batch, filters once, slow
clients coalesced then closed, buffered catch-up without gap or double."""

from __future__ import annotations

import json
import struct

import pytest

from controller.subscription import Subscription
from controller.ws.client import Client
from controller.ws.codes import CloseCode
from controller.ws.frames import text_frame
from controller.ws.hub import Hub, Outgoing


class FakeSocket:
    """Records writes; its 'kernel' accepts bytes until `stuck` is set."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.stuck = False
        self.backlog = 0
        self.aborted = False
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.stuck:
            self.backlog += len(data)
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.aborted

    def pause_reading(self) -> None:
        """Nothing is read from this socket anyway."""

    def resume_reading(self) -> None:
        """See pause_reading."""


def frames(data: bytes) -> list[dict[str, object]]:
    """Parse unmasked server frames back into messages."""
    out, i = [], 0
    while i < len(data):
        opcode, size = data[i] & 0x0F, data[i + 1]
        i += 2
        if size == 126:
            size = struct.unpack("!H", data[i:i + 2])[0]
            i += 2
        elif size == 127:
            size = struct.unpack("!Q", data[i:i + 8])[0]
            i += 8
        payload = data[i:i + size]
        i += size
        out.append({"close": struct.unpack("!H", payload[:2])[0]} if opcode == 8
                   else json.loads(payload))
    return out


def event(n: int, type_: str = "gpio.state.changed", resource: str = "led-1",
          node: str = "pi-1") -> Outgoing:
    body = json.dumps({"id": f"{n}-0", "type": type_, "resource": resource, "node_id": node,
                       "data": {"n": n}}).encode()
    return Outgoing(f"{n}-0", type_, node, None, resource, text_frame(body))


def test_text_frame_lengths() -> None:
    for size in (0, 125, 126, 65535, 65536):
        payload = b"x" * size
        assert frames(text_frame(b'"' + payload + b'"'))[0] == "x" * size


def test_one_write_per_client_per_batch_and_filters_decided_per_group() -> None:
    hub = Hub(soft_limit=1 << 20, hard_limit=1 << 22)
    everyone = [FakeSocket() for _ in range(3)]
    for sock in everyone:
        hub.add(Client(hub, sock, Subscription.parse()))
    gpio_only = FakeSocket()
    hub.add(Client(hub, gpio_only, Subscription.parse(types="node.*")))
    batch = [event(1), event(2, "node.status.changed"), event(3)]
    hub.publish(batch)
    for sock in everyone:
        assert len(sock.writes) == 1
        assert [m["id"] for m in frames(sock.writes[0])] == ["1-0", "2-0", "3-0"]
    assert [m["id"] for m in frames(gpio_only.writes[0])] == ["2-0"]
    # The same bytes object goes to every member: encoded once.
    assert everyone[0].writes[0] is everyone[1].writes[0]


async def test_slow_client_is_coalesced_then_closed_while_others_keep_up() -> None:
    hub = Hub(soft_limit=100, hard_limit=10_000, max_backlog=50)
    fast, slow = FakeSocket(), FakeSocket()
    fast_client, slow_client = Client(hub, fast, Subscription.parse()), Client(
        hub, slow, Subscription.parse())
    hub.add(fast_client)
    hub.add(slow_client)
    slow.stuck = True
    slow.backlog = 500  # its socket is full
    for n in range(1, 21):
        hub.publish([event(n)])  # the same resource: state-like, coalesced to one
    assert len(fast.writes) == 20
    assert slow_client.slow and len(slow_client.backlog) == 1
    assert slow_client.dropped == 19
    slow.stuck, slow.backlog = False, 0
    writes_before = len(slow.writes)
    slow_client.flush_backlog()
    sent = [m for w in slow.writes[writes_before:] for m in frames(w)]
    assert sent[0]["type"] == "ws.coalesced" and sent[0]["dropped"] == 19
    assert [m["id"] for m in sent[1:]] == ["20-0"]  # only the latest state
    # Now it stops reading for good: distinct events fill the backlog past its limit.
    slow.stuck, slow.backlog = True, 500
    for n in range(100, 200):
        hub.publish([event(n, "system.log.created")])
    assert slow_client.closed
    assert frames(slow.writes[-1])[-1] == {"close": CloseCode.SLOW_CONSUMER}
    assert len(fast.writes) == 20 + 100
    slow_client.cancel_timers()


def test_buffered_catch_up_has_no_gap_and_no_double() -> None:
    hub = Hub(soft_limit=1 << 20, hard_limit=1 << 22)
    sock = FakeSocket()
    client = Client(hub, sock, Subscription.parse())
    client.begin_catch_up()
    hub.add(client)
    hub.publish([event(5), event(6)])
    hub.publish([event(7)])
    hub.advance("7-0")
    assert sock.writes == []
    client.send_many([event(4), event(5), event(6)])  # replayed from the stream up to 6
    client.go_live("6-0")
    ids = [m["id"] for w in sock.writes for m in frames(w)]
    assert ids == ["4-0", "5-0", "6-0", "7-0"]


@pytest.mark.parametrize("cut", [None, "0-0"])
def test_go_live_without_replay_sends_everything_buffered(cut: str | None) -> None:
    hub = Hub(soft_limit=1 << 20, hard_limit=1 << 22)
    sock = FakeSocket()
    client = Client(hub, sock, Subscription.parse())
    client.begin_catch_up()
    hub.add(client)
    hub.publish([event(1)])
    client.go_live(cut)
    assert [m["id"] for w in sock.writes for m in frames(w)] == ["1-0"]


def test_a_catch_up_ahead_of_the_feed_waits_for_it_and_sends_nothing_twice() -> None:
    hub = Hub(soft_limit=1 << 20, hard_limit=1 << 22)
    hub.advance("3-0")
    sock = FakeSocket()
    client = Client(hub, sock, Subscription.parse())
    client.begin_catch_up()
    hub.add(client)
    client.send_many([event(4), event(5)])  # the snapshot/replay read up to 5
    client.go_live("5-0")
    assert client.buffering  # the feed is only at 3
    hub.publish([event(4), event(5)])
    hub.advance("5-0")
    hub.publish([event(6)])
    hub.advance("6-0")
    ids = [m["id"] for w in sock.writes for m in frames(w)]
    assert ids == ["4-0", "5-0", "6-0"]
