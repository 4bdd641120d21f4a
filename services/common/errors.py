"""The one domain-error hierarchy; domain code raises these and never imports grpc."""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """A failure the caller is allowed to see; `message` is safe to send to clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; `violations` lists (field, description) pairs."""

    def __init__(self, field: str, message: str, *, more: Iterable[tuple[str, str]] = ()) -> None:
        self.violations: list[tuple[str, str]] = [(field, message), *more]
        super().__init__(
            "; ".join(f"{name}: {text}" if name else text for name, text in self.violations)
        )
        self.field = field

    @classmethod
    def of(cls, violations: Iterable[tuple[str, str]]) -> InvalidArgument:
        """Builds one error from every violation found, so clients can fix them in one go."""
        first, *rest = list(violations)
        return cls(first[0], first[1], more=rest)


class NotFound(DomainError):
    """The resource does not exist, or belongs to another tenant."""


class AlreadyExists(DomainError):
    """The resource the caller tried to create exists already."""


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""


class Unauthenticated(DomainError):
    """The caller presented no valid credentials."""


class FailedPrecondition(DomainError):
    """The system is not in the state the operation needs; retrying as-is will not help."""


class Aborted(DomainError):
    """A concurrency conflict (e.g. a stale version); the caller may retry the whole sequence."""


class ResourceExhausted(DomainError):
    """A quota or rate limit was hit; `retry_after_s` says when trying again may succeed."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A dependency is down for now; the caller may retry with backoff, after `retry_after_s`
    when that is known."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DomainError):
    """The work did not finish in the time allowed."""


class Unimplemented(DomainError):
    """The operation is not supported (yet) by this service."""


class DependencyUnavailableError(RuntimeError):
    """A service cannot start because something it depends on (database, Redis) is not there.

    Not a DomainError: it happens at start-up, never in answer to a request.
    """
