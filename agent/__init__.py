"""The node agent: runs on every Pi, publishes what happens there, applies GPIO commands."""
