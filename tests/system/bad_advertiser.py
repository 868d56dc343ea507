"""Advertises broken _pi-agent._tcp records and sends a garbage mDNS packet, then idles.

Run inside a test namespace: ``python bad_advertiser.py ADDRESS``.
"""

from __future__ import annotations

import socket
import sys
import time

from zeroconf import IPVersion, ServiceInfo, Zeroconf

TYPE = "_pi-agent._tcp.local."


def main(address: str) -> None:
    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    records = {
        "binary-id": {b"node_id": b"\xff\xfe\x00bad", b"version": b"1"},
        "bad-label": {b"node_id": b"Not A Label!", b"version": b"1"},
        "no-id": {b"version": b"1", b"model": None},
    }
    for name, props in records.items():
        zc.register_service(ServiceInfo(TYPE, f"{name}.{TYPE}", port=0, properties=props,
                                        server=f"{name}.local.",
                                        addresses=[socket.inet_aton(address)]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        for _ in range(3):
            sock.sendto(b"\x00\x00\x84\x00\x00\x01\x00\x05garbage\xff\xff", ("224.0.0.251", 5353))
    print("advertising", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1])
