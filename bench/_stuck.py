"""A WebSocket client that completes the upgrade and then never reads again."""

from __future__ import annotations

import base64
import fcntl
import os
import socket
import struct
import termios
import time

TCP_STATES = {1: "established", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait", 7: "close",
              8: "close_wait", 9: "last_ack", 11: "closing"}


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame (payload under 126 bytes), masked as RFC 6455 requires."""
    assert len(payload) < 126
    key = os.urandom(4)
    return (bytes((0x80 | opcode, 0x80 | len(payload))) + key
            + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))


class StuckClient:
    def __init__(self, port: int, path: str = "/ws", bearer: str = "",
                 rcvbuf: int = 4096) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window so the server's side fills up in seconds, not minutes.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"{auth}\r\n").encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: leave any frame unread
            byte = self.sock.recv(1)
            if not byte:
                raise RuntimeError(f"upgrade refused: {head!r}")
            head += byte
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head.splitlines()[0]!r}")
        self.local_port = self.sock.getsockname()[1]
        self.opened = time.monotonic()
        self.closed_after: float | None = None

    def state(self) -> str:
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return TCP_STATES.get(info[0], str(info[0]))

    def unread_bytes(self) -> int:
        raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", raw)[0])

    def poll(self) -> None:
        """Note when the server closed or reset the connection (checked, never read)."""
        if self.closed_after is None and self.state() != "established":
            self.closed_after = time.monotonic() - self.opened

    def close(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
