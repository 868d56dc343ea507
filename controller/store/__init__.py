"""The persistence layer: the only code that speaks to Redis.

One module per aggregate, each owning its keys, its typed records and its transactions (all
through ``tx.transact``, one retry and give-up policy); ``docs/redis.md`` lists every key:

- ``core``: ``Store``, which holds a repository per aggregate and stages events;
- ``nodes``: node records, status transitions, heartbeats, health history;
- ``gpio``: GPIO resources, pin claims, nodes' declared state, commands to nodes;
- ``eventlog``: the event stream (appends, history, the live read, retention), dead
  letters, the snapshot;
- ``ingress``: agents' reports, read and applied with what they change;
- ``agents``: agents' Redis users and their credentials;
- ``tokens``: API tokens and login sessions;
- ``clusters``, ``jobs``, ``host_keys``: provisioning;
- ``discovery``, ``alerts``: what discovery saw, which health alerts are raised;
- ``leases``: singleton duties' leases.

Services speak in typed records and never touch the Redis client: an import-linter contract
keeps ``redis`` imports inside this package (and the wiring that creates the client).
"""

from controller.store.core import Store
from controller.store.nodes import Node

__all__ = ["Node", "Store"]
