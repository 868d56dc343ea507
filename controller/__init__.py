"""The controller: consumes the event stream, keeps state in Redis, serves REST, UI and /ws."""
