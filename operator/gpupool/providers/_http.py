"""The JSON-over-HTTPS plumbing the cloud clients share: auth header, timeouts, error mapping.

Each client supplies only what is particular to its cloud: a function that turns an error payload
into a typed ProviderError. Everything generic lives here once: transport failures and timeouts
become TransientError, unmapped statuses fall back to a status-based class, a Retry-After header is
carried on the error, and every message is passed through `redact` so the API key can never reach a
log line, an event or a status condition even if a cloud echoes it back.

The key travels in the Authorization header, never in a URL (URLs end up in logs).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from gpupool.providers.errors import (
    AuthError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    TransientError,
    redact,
)

ErrorMapper = Callable[[int, Any], ProviderError | None]
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ApiKey:
    """A secret string that does not show itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "ApiKey(***)" if self._value else "ApiKey(<empty>)"

    __str__ = __repr__


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds, when it is a number (the HTTP-date form is ignored)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def error_for_status(status: int, message: str, *, provider: str, retry_after: float | None) -> ProviderError:
    """The fallback when a cloud's payload names no known error code."""
    if status in (401, 403):
        return AuthError(message, code=str(status), provider=provider)
    if status == 404:
        return NotFoundError(message, code=str(status), provider=provider)
    if status in (408, 429) or status >= 500:
        return TransientError(message, code=str(status), provider=provider, retry_after=retry_after)
    if 400 <= status < 500:
        return InvalidRequestError(message, code=str(status), provider=provider)
    return ProviderError(message, code=str(status), provider=provider)


class JsonApi:
    """An httpx client bound to one cloud account: base URL, bearer key and error mapper."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        api_key: str,
        map_error: ErrorMapper,
        client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._key = ApiKey(api_key)
        self._map_error = map_error
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        # The account's request bucket (providers/limits.py): every HTTP request waits for it.
        self._limiter = limiter or contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"JsonApi(provider={self.provider!r}, base_url={self.base_url!r}, api_key={self._key!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "gpupool"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    def _redact(self, text: str) -> str:
        return redact(text, self._key.reveal())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx response; a typed ProviderError otherwise."""
        url = f"{self.base_url}{path}"
        try:
            async with self._limiter:
                response = await self._client.request(
                    method, url, json=json_body, params=params, headers={**self._headers(), **(headers or {})}
                )
        except httpx.TimeoutException as error:
            raise TransientError(
                f"{method} {path} timed out ({type(error).__name__})", code="timeout", provider=self.provider
            ) from None
        except httpx.TransportError as error:
            raise TransientError(
                self._redact(f"{method} {path} failed: {type(error).__name__}: {error}"),
                code="connection",
                provider=self.provider,
            ) from None
        body: Any
        try:
            body = response.json() if response.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if response.is_success:
            if body is None and response.content:
                raise TransientError(
                    f"{method} {path}: response is not JSON (HTTP {response.status_code})",
                    code="bad-response",
                    provider=self.provider,
                )
            return body
        mapped = self._map_error(response.status_code, body)
        retry_after = retry_after_seconds(response.headers)
        if mapped is None:
            snippet = self._redact(response.text[:200]) if body is None else ""
            mapped = error_for_status(
                response.status_code,
                f"{method} {path}: HTTP {response.status_code}{': ' + snippet if snippet else ''}",
                provider=self.provider,
                retry_after=retry_after,
            )
        mapped.scrub(self._key.reveal())
        mapped.provider = mapped.provider or self.provider
        if isinstance(mapped, TransientError) and mapped.retry_after is None:
            mapped.retry_after = retry_after
        raise mapped

    def scrub(self, error: ProviderError) -> ProviderError:
        """`error` with this account's key removed, for errors built from a 2xx body (GraphQL)."""
        error.scrub(self._key.reveal())
        error.provider = error.provider or self.provider
        return error

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
