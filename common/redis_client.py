"""Redis connections with reconnect and backoff, shared by agent and controller."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.settings import mask_url

logger = logging.getLogger(__name__)

Redis: TypeAlias = Any
"""A ``redis.asyncio.Redis`` client (its replies are untyped here: see pyproject's mypy notes)."""

UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean 'Redis is not reachable right now': retry later, never crash."""

UNAVAILABLE_OR_TIMEOUT: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


PLAIN_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True, kw_only=True)
class SentinelTarget:
    """A Redis primary found through Sentinel, as a ``redis+sentinel://`` URL names it:

        redis+sentinel://[user:password@]host1:26379,host2:26379/<service>[/<db>]
            [?sentinel_username=...&sentinel_password=...]

    The user and password are for Redis; ``sentinel_username``/``sentinel_password`` for
    the Sentinels (if they require one). ``rediss+sentinel`` speaks TLS to both."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    def url(self, *, username: str | None = None, password: str | None = None,
            sentinels: str | None = None) -> str:
        """This target as a URL, with another Redis user and/or Sentinel addresses."""
        user = username if username is not None else self.username
        secret = password if password is not None else self.password
        auth = ""
        if user or secret:
            auth = f"{quote(user or '', safe='')}:{quote(secret or '', safe='')}@"
        hosts = sentinels or ",".join(f"{h}:{p}" for h, p in self.sentinels)
        query = urlencode({k: v for k, v in (("sentinel_username", self.sentinel_username),
                                             ("sentinel_password", self.sentinel_password))
                           if v})
        scheme = SENTINEL_SCHEMES[1] if self.tls else SENTINEL_SCHEMES[0]
        return f"{scheme}://{auth}{hosts}/{self.service}/{self.db}" + (
            f"?{query}" if query else "")


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{what}: {text!r} is not a port")
    return int(text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinel target a ``redis+sentinel://`` URL names; ValueError saying what is wrong
    (the message never holds a password)."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"a Sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}://")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, _, secret = userinfo.partition(":")
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host:
            raise ValueError(f"Sentinel address {item.strip()!r} is not host:port")
        sentinels.append((host.strip("[]"), _port(port, "Sentinel address")))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL names the service after the addresses: "
                         "redis+sentinel://host:26379/<service>[/<db>]")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"database {path[1]!r} is not a number")
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_username", "sentinel_password"}
    if unknown:
        raise ValueError(f"unknown Sentinel URL parameter {sorted(unknown)[0]!r}")
    return SentinelTarget(
        sentinels=tuple(sentinels), service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None, password=unquote(secret) or None,
        sentinel_username=query.get("sentinel_username", [None])[0],
        sentinel_password=query.get("sentinel_password", [None])[0],
        tls=parts.scheme == SENTINEL_SCHEMES[1])


def check_url(url: str) -> None:
    """ValueError, naming the problem without the password, if ``url`` is no Redis URL we
    can use (checked at start, so a bad one is one line, not a stuck process)."""
    if not url:
        raise ValueError("the Redis URL is empty")
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(f"Redis URL scheme {scheme + '://' if scheme else '(none)'} is not "
                         f"one of {', '.join(s + '://' for s in PLAIN_SCHEMES + SENTINEL_SCHEMES)}")
    try:
        parse_url(url)
    except ValueError as err:
        raise ValueError(f"Redis URL {mask_url(url)}: {err}") from None


def connect(url: str, *, retries: int = 3, socket_timeout: float | None = 10.0,
            max_connections: int = 64, ca_file: str = "") -> Redis:
    """A client that retries a failed command a few times with jittered exponential backoff.

    ``rediss://`` URLs verify the server against ``ca_file`` (else the system's CAs).
    ``redis+sentinel://`` URLs ask the Sentinels for the primary, and ask again after a
    failover (the next connection goes to the promoted replica). Nothing is sent until the
    first command. ``socket_timeout`` must exceed any BLOCK time used on this client. The
    plain pool is bounded and blocking: a burst (a thousand dashboards reconnecting at once)
    waits for a connection instead of failing. Replies stay bytes.
    """
    common: dict[str, Any] = {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_connect_timeout": 3.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 15,
        "decode_responses": False,
    }
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return _sentinel_client(parse_sentinel_url(url), common, ca_file, max_connections)
    tls: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file and url.startswith(
        "rediss://") else {}
    pool = aioredis.BlockingConnectionPool.from_url(
        url, **tls, **common, max_connections=max_connections, timeout=20)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


def _sentinel_client(target: SentinelTarget, common: dict[str, Any], ca_file: str,
                     max_connections: int) -> Redis:
    tls: dict[str, Any] = {}
    if target.tls:
        tls = {"ssl": True, **({"ssl_ca_certs": ca_file} if ca_file else {})}
    sentinel = Sentinel(
        list(target.sentinels),
        # Asking the Sentinels fails fast (the next one is asked, and the caller's retries
        # and logging take over): redis-py's default would spend up to half a minute per
        # lookup with no word in the log.
        sentinel_kwargs={"username": target.sentinel_username,
                         "password": target.sentinel_password,
                         "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1),
                         "socket_connect_timeout": 3.0, "socket_timeout": 3.0, **tls},
        username=target.username, password=target.password, db=target.db, **tls, **common)
    return sentinel.master_for(target.service, max_connections=max_connections)


async def replicas_of(client: Redis) -> list[Redis]:
    """Clients of the primary's replicas, as its Sentinels list them (none without Sentinel),
    with the primary's credentials: for what Redis does not replicate (ACL users). The
    caller closes them."""
    pool = client.connection_pool
    manager = getattr(pool, "sentinel_manager", None)
    if manager is None:
        return []
    kwargs = {k: v for k, v in pool.connection_kwargs.items()
              if k in ("username", "password", "db", "ssl", "ssl_ca_certs",
                       "socket_connect_timeout", "socket_timeout")}
    return [aioredis.Redis(host=host, port=port, **kwargs)
            for host, port in await manager.discover_slaves(pool.service_name)]


async def wait_until_ready(client: Redis, url: str, *, timeout: float | None = 30.0) -> None:
    """Wait for PING to answer, logging (without the password) while it does not."""
    delay = 0.05
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.ping()
                return
            except UNAVAILABLE as err:
                logger.warning("Redis at %s not reachable yet (%s); retrying", mask_url(url),
                               type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
