"""Pi-Controller's exception tree.

    PiControllerError
    ├── DecodeError            a stream entry or message that cannot be decoded (permanent)
    ├── ValidationError        input that breaks a rule; names the field and the reason (permanent)
    │   └── ConflictError      valid on its own, but clashes with existing state
    ├── NotFoundError          a resource that does not exist
    ├── AuthError              missing or unknown credentials
    │   └── ForbiddenError     known credentials without the needed role
    └── TemporaryError         worth retrying: Redis away, a host not answering yet

The REST layer maps these to HTTP statuses in one place (`controller.api.errors`).
"""

from __future__ import annotations


class PiControllerError(Exception):
    """Root of every error Pi-Controller raises on purpose."""


class DecodeError(PiControllerError):
    """Bytes that are not a valid message."""


class ValidationError(PiControllerError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class QueryError(ValidationError):
    """A query parameter the endpoint does not know (400, naming it)."""


class ConflictError(ValidationError):
    pass


class NotFoundError(PiControllerError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class AuthError(PiControllerError):
    pass


class ForbiddenError(AuthError):
    pass


class ThrottledError(PiControllerError):
    """Too many attempts: try again after ``retry_after`` seconds (429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TemporaryError(PiControllerError):
    pass


class NotReplicatedError(TemporaryError):
    """A write committed on the Redis primary that too few replicas confirmed in time: it
    may be lost if the primary fails before they catch up."""
