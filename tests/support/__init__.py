"""Real parts for the tests: Redis servers, product processes, WebSocket clients."""
