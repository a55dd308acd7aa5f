"""A scripted provider for connector tests: httpx.MockTransport plus recorded requests.

Each reply is an ``httpx.Response``, an exception to raise (a connection
failure), or a callable taking the request. Streamed bodies are given as
byte chunks, optionally ending in a transport error (a cut connection).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

Reply = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]

SECRET = "sk-test-0penheim-S3CRET-do-not-leak-7f3a9c"


class Chunks(httpx.AsyncByteStream):
    """A response body delivered in the given chunks, then optionally a transport error."""

    def __init__(self, chunks: Iterable[bytes], error: BaseException | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


class Provider:
    """Answers requests with the scripted replies, in order, and records each request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.streams: list[Chunks] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request #{len(self.requests)}: {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        response = reply(request) if callable(reply) else reply
        if isinstance(response.stream, Chunks):
            self.streams.append(response.stream)
        return response

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def json_response(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=payload, headers=headers)


def sse_response(
    raw: bytes, *, split: Iterable[int] | int | None = None, error: BaseException | None = None
) -> httpx.Response:
    """A text/event-stream response of ``raw``, cut into chunks at ``split``.

    ``split`` is a chunk size, or explicit byte offsets; ``error`` is raised
    after the last chunk, as when the connection drops.
    """
    if split is None:
        chunks = [raw]
    elif isinstance(split, int):
        chunks = [raw[i : i + split] for i in range(0, len(raw), split)]
    else:
        cuts = [0, *sorted(split), len(raw)]
        chunks = [raw[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks, error)
    )


def cut() -> httpx.RemoteProtocolError:
    """What httpx raises when the peer closes mid-body."""
    return httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Consume ``stream`` into ``into`` (so a test sees what arrived before an error)."""
    async for event in stream:
        into.append(event)


class FakeSleep:
    """Records the backoff delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
