"""HTTP plumbing shared by the remote connectors (``openai``, ``anthropic``).

- One pooled ``httpx.AsyncClient`` per connector, created on first use (or
  injected with ``http_client=``, which the caller then owns and closes).
- Retries with exponential backoff and full jitter on 408, 429, 500, 502,
  503, 504, 529 and on connection failures, honouring ``Retry-After``
  (seconds or an HTTP date) and ``retry-after-ms``, and the providers'
  ``x-should-retry`` header when present.
- Streams are retried only before their first event reaches the caller;
  after that a cut raises :class:`ModelConnectionError` and the stream is
  never restarted behind the caller's back (it would repeat text already
  shown).
- Error statuses map to the most specific :mod:`openheim.errors` class,
  carrying the provider's own message and the status.
- The API key lives in a :class:`Secret`; it is added to each request's
  headers and scrubbed from every error message, so it never reaches a log,
  a repr or an exception.

httpx is imported here, and this module only by the connectors, so that
``import openheim`` stays light.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
import msgspec

from openheim import telemetry
from openheim.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelResponseError,
    ModelTimeout,
    RateLimitError,
    ServerError,
)
from openheim.models._sse import SSEDecoder, SSEEvent
from openheim.models.base import RAW_ARGUMENTS_KEY, ModelRequest, ModelResponse, StreamEvent

__all__ = [
    "HTTPClient",
    "HTTPModel",
    "ProviderErrorEvent",
    "Secret",
    "SleepFn",
    "StreamParser",
    "encode_tool_arguments",
    "parse_tool_arguments",
    "resolve_api_key",
]

logger = logging.getLogger("openheim.models")

SleepFn = Callable[[float], Awaitable[None]]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
INITIAL_DELAY = 0.5  # seconds; doubled per retry, then fully jittered
MAX_DELAY = 8.0
# A Retry-After longer than this is not slept through: the caller gets the
# RateLimitError (with retry_after) at once and decides.
MAX_RETRY_AFTER = 60.0
DEFAULT_TIMEOUT = 600.0

# Signals, in a 400/413/422 body, that the prompt does not fit the context window.
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_PHRASES = (
    "context length",
    "context_length",
    "context window",
    "context size",
    "prompt is too long",
    "n_ctx",
    "maximum context",
)


class Secret:
    """An API key that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        telemetry.register_secret(value)  # and out of every log line

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``***``."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("API keys are not picklable")


def resolve_api_key(
    provider: str, api_key: str | None, api_key_env: str | None, *, required: bool
) -> Secret | None:
    """The key from ``api_key=`` or the ``api_key_env`` variable; ConfigError if required and absent."""
    if api_key:
        return Secret(api_key)
    if api_key_env:
        value = os.environ.get(api_key_env, "")
        if value:
            return Secret(value)
    if required:
        where = f"the {api_key_env} environment variable" if api_key_env else "an API key variable"
        raise ConfigError(
            f"{provider}: no API key. Set {where} or pass api_key= "
            f"(or api_key_env= naming another variable)."
        )
    return None


class ProviderErrorEvent(Exception):
    """Raised by a stream parser for an error the provider sent inside the stream."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class StreamParser(Protocol):
    """Turns one provider's SSE events into stream events; one per attempt."""

    @property
    def done(self) -> bool:
        """True once the provider's final event arrived."""
        ...

    def feed(self, event: SSEEvent) -> Iterable[StreamEvent]:
        """The events ``event`` produces; raise ProviderErrorEvent for error events."""
        ...

    def can_end(self) -> bool:
        """Whether a clean end of the byte stream, before ``done``, still completes the answer."""
        ...

    def finish(self) -> ModelResponse:
        """The whole response, once ``done``."""
        ...


@dataclass
class _Failure:
    """One failed attempt, classified; turned into an exception when we give up."""

    kind: type[ModelError]
    what: str  # what went wrong, in our words
    detail: str = ""  # the provider's message or the transport error
    status: int = 0
    body: str = ""
    retry_after: float | None = None
    retryable: bool = False
    hint: str = ""  # what to do about it
    cause: BaseException | None = None


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _provider_message(text: str) -> tuple[str, str]:
    """(message, code-or-type) from an error body in any of the common shapes."""
    try:
        payload = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return (text.strip()[:2000] or "(empty body)"), ""
    if not isinstance(payload, dict):
        return text.strip()[:2000], ""
    err = payload.get("error", payload)
    if isinstance(err, str):
        return err, ""
    if isinstance(err, dict):
        message = err.get("message")
        code = err.get("code") or err.get("type") or ""
        if isinstance(message, str) and message:
            return message, str(code)
    detail = payload.get("detail")  # FastAPI-style validation errors
    if detail:
        return (detail if isinstance(detail, str) else msgspec.json.encode(detail).decode()), ""
    return text.strip()[:2000], ""


def _is_context_error(message: str, code: str) -> bool:
    if code in _CONTEXT_CODES:
        return True
    low = message.lower()
    return any(p in low for p in _CONTEXT_PHRASES)


class HTTPClient:
    """POSTs JSON to one provider with retries; streams its SSE responses."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Callable[[], dict[str, str]],
        secret: Secret | None,
        key_hint: str,
        http_client: httpx.AsyncClient | None,
        timeout: float | None,
        max_retries: int,
        sleep: SleepFn | None,
    ) -> None:
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{provider}: base_url must start with http:// or https://, got {base_url!r}"
            )
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._secret = secret
        self._key_hint = key_hint
        self._own_client = http_client is None
        self._client: httpx.AsyncClient | None = http_client
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"{provider}: timeout must be positive seconds, got {timeout}")
        # An injected client keeps its own timeouts unless timeout= is given.
        self._timeout: httpx.Timeout | None = None
        if timeout is not None or http_client is None:
            t = DEFAULT_TIMEOUT if timeout is None else timeout
            # Connecting should fail fast; reading may legitimately take minutes.
            self._timeout = httpx.Timeout(t, connect=min(t, 15.0))
        self.max_retries = max_retries
        self._sleep: SleepFn = sleep if sleep is not None else asyncio.sleep

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the pooled client if this connector created it."""
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ---- requests -------------------------------------------------------------

    def _request(self, path: str, content: bytes) -> httpx.Request:
        return self._http().build_request(
            "POST",
            self.base_url + path,
            content=content,
            headers={"content-type": "application/json", **self._headers()},
            timeout=self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """The decoded JSON answer to a POST, after retries."""
        content = msgspec.json.encode(body)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http().send(self._request(path, content))
            except httpx.RequestError as exc:
                failure = self._transport_failure(exc, path)
            else:
                if response.is_success:
                    return self._decode(response.content)
                failure = self._status_failure(response.status_code, response.text, response)
            if not await self._backoff(failure, attempt):
                raise self._error(failure, attempt) from failure.cause

    async def stream(
        self, path: str, body: dict[str, Any], new_parser: Callable[[], StreamParser]
    ) -> AsyncIterator[StreamEvent]:
        """The parsed events of a streamed POST, retried only before the first event."""
        content = msgspec.json.encode(body)
        attempt = 0
        while True:
            attempt += 1
            parser = new_parser()
            delivered = 0
            failure: _Failure | None = None
            response: httpx.Response | None = None
            try:
                response = await self._http().send(self._request(path, content), stream=True)
                if not response.is_success:
                    await response.aread()
                    failure = self._status_failure(response.status_code, response.text, response)
                elif response.headers.get("content-type", "").startswith("application/json"):
                    # The server ignored stream=true, or sent an error with status 200.
                    await response.aread()
                    raise ModelResponseError(
                        f"{self.provider}: expected an event stream, got JSON: "
                        f"{self._redact(response.text[:500])}",
                        provider=self.provider,
                    )
                else:
                    decoder = SSEDecoder()
                    async for chunk in response.aiter_bytes():
                        for sse in decoder.feed(chunk):
                            if parser.done:
                                continue  # read to EOF so the connection goes back to the pool
                            for event in parser.feed(sse):
                                delivered += 1
                                yield event
                    if not (parser.done or parser.can_end()):
                        failure = _Failure(
                            ModelConnectionError,
                            "the stream ended before its final event",
                            retryable=True,
                        )
            except httpx.RequestError as exc:
                if not parser.done:
                    failure = self._transport_failure(exc, path)
            except ProviderErrorEvent as exc:
                failure = self._status_failure(exc.status, exc.body, None)
            finally:
                if response is not None:
                    await response.aclose()
            if failure is None:
                yield parser.finish()
                return
            if delivered:
                # Restarting would repeat what the caller already has: never retry now.
                raise self._interrupted(failure, delivered) from failure.cause
            if not await self._backoff(failure, attempt):
                raise self._error(failure, attempt) from failure.cause

    def _interrupted(self, f: _Failure, delivered: int) -> ModelError:
        if f.kind is ModelConnectionError or f.kind is ModelTimeout:
            detail = f": {f.detail}" if f.detail else ""
            verb = "stalled" if f.kind is ModelTimeout else "interrupted"
            return f.kind(
                self._redact(
                    f"{self.provider}: stream {verb} after {delivered} events ({f.what}{detail}). "
                    "It is not retried because part of the answer was already delivered; "
                    "run the request again."
                ),
                provider=self.provider,
            )
        f.what += f" after {delivered} streamed events"
        return self._error(f, 1)

    # ---- failures -------------------------------------------------------------

    def _decode(self, content: bytes) -> Any:
        try:
            return msgspec.json.decode(content)
        except msgspec.DecodeError:
            raise ModelResponseError(
                f"{self.provider}: the response is not valid JSON: "
                f"{self._redact(content[:300].decode('utf-8', 'replace'))!r}",
                provider=self.provider,
            ) from None

    def _redact(self, text: str) -> str:
        return self._secret.redact(text) if self._secret is not None else text

    def _transport_failure(self, exc: httpx.RequestError, path: str) -> _Failure:
        where = self.base_url + path
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            # A connect timeout is a connection failure worth retrying; a read or pool
            # timeout means the model is slow, and retrying would double the wait.
            t = self._timeout or self._http().timeout
            limit = t.connect if isinstance(exc, httpx.ConnectTimeout) else t.read
            return _Failure(
                ModelTimeout,
                f"no answer from {where} within {limit:g}s" if limit else f"{where} timed out",
                detail,
                retryable=isinstance(exc, httpx.ConnectTimeout),
                hint="Raise timeout= or try again later.",
                cause=exc,
            )
        if not isinstance(exc, httpx.TransportError) or isinstance(
            exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        ):
            # Our request is at fault; sending it again cannot help.
            return _Failure(ModelConnectionError, f"request to {where} failed", detail, cause=exc)
        return _Failure(
            ModelConnectionError,
            f"connection to {where} failed",
            detail,
            retryable=True,
            hint="Check the network and base_url.",
            cause=exc,
        )

    def _status_failure(self, status: int, text: str, response: httpx.Response | None) -> _Failure:
        message, code = _provider_message(text)
        retry_after = _parse_retry_after(response.headers) if response is not None else None
        retryable = status in RETRY_STATUSES
        should = response.headers.get("x-should-retry") if response is not None else None
        if should in ("true", "false"):
            retryable = should == "true"
        f = _Failure(
            ModelHTTPError,
            f"HTTP {status}",
            message,
            status=status,
            body=text[:4000],
            retry_after=retry_after,
            retryable=retryable,
        )
        if status in (401, 403):
            f.kind, f.what = AuthenticationError, f"authentication failed (HTTP {status})"
            f.hint = f"Check the API key ({self._key_hint})."
        elif status == 429:
            f.kind, f.what = RateLimitError, "rate limited (HTTP 429)"
            f.hint = "Slow down, raise max_retries=, or check the account's limits."
        elif status in (400, 413, 422) and _is_context_error(message, code):
            f.kind = ContextLengthError
            f.what = f"the conversation does not fit the model's context window (HTTP {status})"
            f.hint = "Shorten the history or tool results, or use a model with a larger window."
        elif 400 <= status < 500:
            f.kind, f.what = BadRequestError, f"the request was refused (HTTP {status})"
        elif status >= 500:
            f.kind, f.what = ServerError, f"server error (HTTP {status})"
            f.hint = "The provider is failing; try again later."
        return f

    def _error(self, f: _Failure, attempts: int) -> ModelError:
        text = f"{self.provider}: {f.what}"
        if attempts > 1:
            text += f" on {attempts} attempts"
        if f.detail:
            text += f": {f.detail}"
        if f.kind is RateLimitError and f.retry_after is not None:
            text += f" (the provider asks to retry after {f.retry_after:g}s)"
        if f.hint:
            text += f". {f.hint}"
        text = self._redact(text)
        if f.kind is RateLimitError:
            return RateLimitError(
                text,
                provider=self.provider,
                status_code=f.status,
                body=self._redact(f.body),
                retry_after=f.retry_after,
            )
        if issubclass(f.kind, ModelHTTPError):
            return f.kind(
                text, provider=self.provider, status_code=f.status, body=self._redact(f.body)
            )
        return f.kind(text, provider=self.provider)

    async def _backoff(self, f: _Failure, attempt: int) -> bool:
        """Sleep before the next attempt and return True, or False to give up."""
        if not f.retryable or attempt > self.max_retries:
            return False
        if f.retry_after is not None:
            if f.retry_after > MAX_RETRY_AFTER:
                return False
            delay = f.retry_after
        else:
            delay = random.random() * min(MAX_DELAY, INITIAL_DELAY * 2 ** (attempt - 1))
        logger.info(
            "%s: %s, retrying in %.2fs (retry %d of %d)",
            self.provider,
            self._redact(f.what),
            delay,
            attempt,
            self.max_retries,
        )
        await self._sleep(delay)
        return True


class HTTPModel:
    """The parts of a remote connector that do not depend on the provider's format."""

    provider: ClassVar[str]
    _path: ClassVar[str]

    def __init__(self, model: str, http: HTTPClient, context_window: int | None) -> None:
        if not model:
            raise ConfigError(f"{self.provider}: model name must not be empty")
        self.model = model
        self._http = http
        self._context_window = context_window

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def context_window(self) -> int | None:
        return self._context_window

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def _body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, payload: Any, request: ModelRequest) -> ModelResponse:
        raise NotImplementedError

    def _stream_parser(self, request: ModelRequest) -> StreamParser:
        raise NotImplementedError

    async def request(self, request: ModelRequest) -> ModelResponse:
        """One whole model turn."""
        call = self._request(request)
        return await telemetry.chat(call, self.name, request, server=self._http.base_url)

    async def _request(self, request: ModelRequest) -> ModelResponse:
        payload = await self._http.post_json(self._path, self._body(request, stream=False))
        return self._parse(payload, request)

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """The turn as TextDelta / ToolCallDelta events, then the whole ModelResponse."""
        body = self._body(request, stream=True)
        events = self._http.stream(self._path, body, lambda: self._stream_parser(request))
        return telemetry.chat_stream(events, self.name, request, server=self._http.base_url)

    async def aclose(self) -> None:
        """Close pooled connections (an injected ``http_client`` is left to its owner)."""
        await self._http.aclose()

    async def __aenter__(self) -> HTTPModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"


def parse_tool_arguments(text: str) -> dict[str, Any]:
    """A tool call's arguments from the model's JSON text; see RAW_ARGUMENTS_KEY."""
    if not text.strip():
        return {}  # some servers send "" for a call without arguments
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {RAW_ARGUMENTS_KEY: text}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: text}


def encode_tool_arguments(arguments: dict[str, Any]) -> str:
    """The JSON text of a tool call's arguments (the raw text if they never parsed)."""
    raw = arguments.get(RAW_ARGUMENTS_KEY)
    if isinstance(raw, str) and len(arguments) == 1:
        return raw
    return msgspec.json.encode(arguments).decode()
