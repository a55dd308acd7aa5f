"""The connectors' own pooled httpx client against a real socket server on loopback.

MockTransport tests fake httpx's transport; these check that what a real
connection does (a peer closing mid-body, a refused port) reaches the retry
logic as the tests there assume.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from _connector_wire import FakeSleep, drain
from _llama_server import free_port

from openheim.errors import ModelConnectionError
from openheim.messages import Message
from openheim.models import ModelRequest, TextDelta
from openheim.models.base import ModelResponse
from openheim.models.openai import OpenAIModel

REQUEST = ModelRequest([Message.user("Hello!")])


def sse_chunk(delta: str) -> bytes:
    data = (
        '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        f'"choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}'
    )
    return f"data: {data}\n\n".encode()


FIRST_TOKEN = sse_chunk('{"content":"Hel"}')
REST = (
    sse_chunk('{"content":"lo"}')
    + b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)

Handler = Callable[[int, asyncio.StreamWriter], Awaitable[None]]


async def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def start_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[int], list[Handler]]]:
    """A loopback HTTP server; each request is answered by the next handler."""
    handlers: list[Handler] = []
    served: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await reader.readexactly(length)
                served.append(len(served))
                await handlers.pop(0)(len(served), writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    srv = await asyncio.start_server(on_connect, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}/v1", served, handlers
    finally:
        srv.close()
        await srv.wait_closed()


async def full(n: int, writer: asyncio.StreamWriter) -> None:
    await start_headers(writer)
    await write_chunk(writer, FIRST_TOKEN + REST)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def cut_after_first_token(n: int, writer: asyncio.StreamWriter) -> None:
    await start_headers(writer)
    await write_chunk(writer, FIRST_TOKEN)
    await write_chunk(writer, REST[:25])  # half an event, then the peer goes away
    writer.close()


async def cut_before_first_token(n: int, writer: asyncio.StreamWriter) -> None:
    await start_headers(writer)
    await write_chunk(writer, sse_chunk('{"role":"assistant","content":""}'))
    writer.close()


async def test_real_cut_after_the_first_token_is_not_retried(
    server: tuple[str, list[int], list[Handler]],
) -> None:
    base, served, handlers = server
    handlers += [cut_after_first_token, full]
    got: list[object] = []
    async with OpenAIModel("m", base_url=base, sleep=FakeSleep()) as model:
        with pytest.raises(ModelConnectionError, match="interrupted after 1 events"):
            await drain(model.stream(REQUEST), got)
    assert got == [TextDelta("Hel")]
    assert len(served) == 1


async def test_real_cut_before_the_first_token_is_retried(
    server: tuple[str, list[int], list[Handler]],
) -> None:
    base, served, handlers = server
    handlers += [cut_before_first_token, full, full]
    sleep = FakeSleep()
    async with OpenAIModel("m", base_url=base, sleep=sleep) as model:
        events = [e async for e in model.stream(REQUEST)]
        again = [e async for e in model.stream(REQUEST)]  # on the pooled connection
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo")]
    assert isinstance(events[-1], ModelResponse)
    assert again[:-1] == events[:-1]
    assert len(served) == 3
    assert len(sleep.delays) == 1


async def test_refused_port_is_retried_then_connection_error() -> None:
    sleep = FakeSleep()
    async with OpenAIModel(
        "m", base_url=f"http://127.0.0.1:{free_port()}/v1", sleep=sleep, max_retries=2
    ) as model:
        with pytest.raises(ModelConnectionError, match="3 attempts"):
            await model.request(REQUEST)
    assert len(sleep.delays) == 2
