"""What the node agent and the controller share: events, keys, settings, Redis access."""

__version__ = "0.1.0"
