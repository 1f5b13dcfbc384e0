"""Typed provider errors: the one vocabulary every cloud's failures are translated into.

Each cloud reports failure its own way (Lambda: an error code in a JSON body; RunPod: a GraphQL
`errors` list on an HTTP 200; simcloud: its own codes). The claim controller must not care which: it
fails over to the next offer on capacity and quota errors, surfaces auth and invalid-request errors
on the resource's status, and leaves transient errors to the single retry loop in `retry.py`. So
each provider module maps its payloads to exactly these classes, and nothing above the provider
layer ever sees an httpx exception.

Messages may reach events and status conditions, so they are built from the cloud's error code and
message only, never from request headers, and are passed through `redact` by the HTTP helper.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error a provider raises. `code` is the cloud's own code when it gave one."""

    #: Whether retrying the same call, unchanged, can succeed. Only TransientError says yes.
    retryable: bool = False

    def __init__(self, message: str, *, code: str = "", provider: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider

    def scrub(self, *secrets: str) -> None:
        """Remove every secret from the message (and from `args`, which repr and tracebacks show)."""
        self.message = redact(self.message, *secrets)
        self.args = (self.message,)

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        what = f" [{self.code}]" if self.code else ""
        return f"{where}{self.message}{what}"


class CapacityError(ProviderError):
    """The cloud has no capacity for this offer now. Try another offer; mark this one unavailable."""


class QuotaError(ProviderError):
    """The account's quota or balance does not allow the launch. Other offers of the same cloud may
    fail the same way; another cloud will not."""


class AuthError(ProviderError):
    """The credentials were refused (missing, wrong, expired or not allowed). Nothing will work
    until a person fixes the Secret; retrying only burns the rate limit."""


class InvalidRequestError(ProviderError):
    """The cloud rejected the request as malformed or impossible (unknown instance type, spot where
    the cloud sells none, ...). A bug or a stale offer, never fixed by retrying."""


class NotFoundError(ProviderError):
    """The instance does not exist (or no longer does)."""


class TransientError(ProviderError):
    """Rate limits (429), server errors (5xx), timeouts and dropped connections: worth retrying.

    `retry_after` is the cloud's own hint in seconds (a Retry-After header), when it gave one."""

    retryable = True

    def __init__(
        self, message: str, *, code: str = "", provider: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, provider=provider)
        self.retry_after = retry_after


def redact(text: str, *secrets: str) -> str:
    """`text` with every occurrence of each non-empty secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
