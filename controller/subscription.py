"""What a /ws client wants to see: event types (with globs), nodes, clusters, resources.

Filters look only at an event's type and top-level subject keys, never its payload, and
clients with the same filter share one decision per event (see ``hub``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Final

from common import events
from common.errors import ValidationError

_TYPE_RE = re.compile(r"^[a-z*?][a-z0-9_.*?]*$")
MAX_VALUES = 256


def _split(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValidationError(name, "must be a comma-separated string or a list of strings")
    items = [v for v in items if v]
    if len(items) > MAX_VALUES:
        raise ValidationError(name, f"at most {MAX_VALUES} values")
    return frozenset(items)


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_INTERN_MAX = 4096


@dataclass(frozen=True, slots=True)
class Subscription:
    types: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    clusters: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    _exact: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _globs: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _needles: tuple[tuple[bytes, ...], ...] = field(default=(), compare=False, repr=False)
    """For each filter, the strings one of which a matching entry's raw bytes must hold
    (history reads filter on them inside Redis, before decoding)."""

    @classmethod
    def parse(cls, *, types: Any = None, node: Any = None, cluster: Any = None,
              resource: Any = None) -> Subscription:
        """The subscription for these filters; equal filters give the same shared object, so
        thousands of dashboards with one filter cost one Subscription, not thousands."""
        key = (_freeze(types), _freeze(node), _freeze(cluster), _freeze(resource))
        cached = _INTERNED.get(key)
        if cached is None:
            cached = cls._build(types, node, cluster, resource)
            if len(_INTERNED) >= _INTERN_MAX:
                _INTERNED.clear()
            _INTERNED[key] = cached
        return cached

    @classmethod
    def _build(cls, types: Any, node: Any, cluster: Any, resource: Any) -> Subscription:
        type_set = _split(types, "types")
        known = set(events.EVENT_TYPES)
        exact: set[str] = set()
        globs: list[str] = []
        for pattern in type_set:
            if not _TYPE_RE.match(pattern):
                raise ValidationError("types", f"{pattern!r} is not an event type or glob")
            if any(ch in pattern for ch in "*?"):
                if not fnmatch.filter(known, pattern):
                    raise ValidationError("types", f"{pattern!r} matches no event type")
                globs.append(fnmatch.translate(pattern))
            else:
                if pattern not in known:
                    raise ValidationError("types", f"unknown event type {pattern!r}")
                exact.add(pattern)
        nodes, clusters = _split(node, "node"), _split(cluster, "cluster")
        resources = _split(resource, "resource")
        # Globs name known types only: as needles they are the types they match.
        named = exact | {t for t in known if globs and re.match("|".join(globs), t)}
        needles = tuple(tuple(sorted(v.encode() for v in values))
                        for values in (named, nodes, clusters, resources) if values)
        return cls(
            types=type_set,
            nodes=nodes,
            clusters=clusters,
            resources=resources,
            _exact=frozenset(exact),
            _globs=re.compile("|".join(globs)) if globs else None,
            _needles=needles,
        )

    @property
    def needles(self) -> tuple[tuple[bytes, ...], ...]:
        return self._needles

    @property
    def everything(self) -> bool:
        return not (self.types or self.nodes or self.clusters or self.resources)

    def matches(self, type_: str, node_id: str | None, cluster_id: str | None,
                resource: str | None) -> bool:
        if self.types and type_ not in self._exact and not (
                self._globs is not None and self._globs.match(type_)):
            return False
        if self.nodes and node_id not in self.nodes:
            return False
        if self.clusters and cluster_id not in self.clusters:
            return False
        return not (self.resources and resource not in self.resources)

    def describe(self) -> dict[str, list[str]]:
        return {"types": sorted(self.types), "node": sorted(self.nodes),
                "cluster": sorted(self.clusters), "resource": sorted(self.resources)}


_INTERNED: dict[tuple[Any, ...], Subscription] = {}


MAX_ID_PART: Final = (1 << 64) - 1
"""Both halves of a stream id are unsigned 64-bit numbers in Redis."""


def parse_since(value: str | None) -> str | None:
    """A resume position (``since``, ``Last-Event-ID``) as Redis will take it, or None."""
    if value is None or value == "":
        return None
    try:
        ms, seq = events.id_key(value)
    except ValueError:
        raise ValidationError("since", f"{value[:64]!r} is not an event id (like "
                                       "1736937015123-0)") from None
    if not (0 <= ms <= MAX_ID_PART and 0 <= seq <= MAX_ID_PART):
        raise ValidationError("since", f"{value[:64]!r} is not an event id: each part is a "
                                       "number from 0 to 18446744073709551615")
    return f"{ms}-{seq}"
