"""/ws: every event to every client, in real time (docs/websocket.md is the contract).

Layers, outside in:

- ``endpoint``: the aiohttp handler; ``handshake`` checks the upgrade (RFC 6455 section 4).
- ``connection``: the socket after the upgrade: bytes in, ``frames`` out of them, control
  frames, the close handshake, back-pressure and the rate limit.
- ``client``: one client's state machine; every byte queued to it goes through it.
- ``ops`` (client ops), ``catchup`` (replay and snapshot), ``access`` (sockets end when
  their access does), ``hub`` (fan-out of events).
- ``messages`` builds what the server says; ``codes`` holds every close and error code.
"""
