"""The Sentinel test set itself: a failover moves the primary and keeps what was written."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from common.redis_client import parse_sentinel_url
from tests.support.sentinel import SentinelSet


def test_a_killed_primary_is_replaced_by_a_replica_that_has_its_data(tmp_path: Path) -> None:
    with SentinelSet(tmp_path, password="s3cret") as redis_set:
        target = parse_sentinel_url(redis_set.sentinel_url(db=2))
        assert [port for _, port in target.sentinels] == redis_set.sentinel_ports
        assert (target.service, target.db, target.password) == ("mymaster", 2, "s3cret")

        old = redis_set.primary
        assert redis_set.current_primary_port() == old.port
        client = redis.Redis.from_url(redis_set.plain_url(old))
        try:
            client.set("pi:failover", "kept")
            assert client.wait(1, 5000) == 1, "the replica did not acknowledge the write"
        finally:
            client.close()

        killed = redis_set.kill_primary()
        assert killed is old
        began = time.monotonic()
        new_port = redis_set.wait_for_new_primary(old.port)
        print(f"new primary after {time.monotonic() - began:.2f}s")

        assert new_port != old.port
        assert redis_set.primary.port == new_port
        assert redis_set.current_primary_port() == new_port
        client = redis.Redis.from_url(redis_set.plain_url(redis_set.primary))
        try:
            assert client.get("pi:failover") == b"kept"
        finally:
            client.close()
