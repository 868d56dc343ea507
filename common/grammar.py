"""The one grammar for names and addresses that end up in keys, logs, commands and
certificates. Every pattern matches the whole value (``fullmatch``: a trailing newline is
never "the end of the line"), so a value that passes cannot carry control characters,
spaces, quotes or commas into a command line or a list."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""Node ids, GPIO resource names, cluster names: an RFC 1123 label, lower case."""
HOSTNAME: Final = re.compile(r"(?=.{1,253}\.?\Z)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
                             r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?")
"""A host name (RFC 1123): dot-separated labels, at most 253 characters."""
SSH_USER: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
"""A POSIX user name as useradd accepts it."""
LABEL_NAME: Final = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?"
                               r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
"""A Kubernetes label key: an optional DNS prefix and a name."""
LABEL_VALUE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def is_label(value: object) -> bool:
    return isinstance(value, str) and DNS_LABEL.fullmatch(value) is not None


def is_hostname(value: object) -> bool:
    return isinstance(value, str) and HOSTNAME.fullmatch(value) is not None


def is_ssh_user(value: object) -> bool:
    return isinstance(value, str) and SSH_USER.fullmatch(value) is not None


def ip(value: object) -> str | None:
    """``value`` as a normalised IP address, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@functools.lru_cache(maxsize=16)
def networks(entries: tuple[str, ...], setting: str) -> tuple[Network, ...]:
    """A setting's addresses or CIDRs as networks; ValueError naming the setting and the
    entry that is neither. Cached: settings are read on every request that needs them."""
    parsed = []
    for entry in entries:
        try:
            parsed.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {entry!r} is not an address or CIDR") from None
    return tuple(parsed)


def within(address: str | None, nets: tuple[Network, ...]) -> bool:
    """Is ``address`` an IP address inside one of ``nets``?"""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in nets)


def host(value: object) -> str | None:
    """An IP address (normalised) or a host name; None if ``value`` is neither."""
    address = ip(value)
    if address is not None:
        return address
    return value if is_hostname(value) else None  # type: ignore[return-value]
