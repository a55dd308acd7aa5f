"""The incremental SSE parser: framing rules, and any split of the bytes gives the same events."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from openheim.models._sse import SSEDecoder, SSEEvent


def parse(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_data_lines_join_with_newlines_and_blank_line_dispatches() -> None:
    events = parse(b"data: first\ndata: second\n\ndata: third\n\n")
    assert events == [SSEEvent("first\nsecond"), SSEEvent("third")]


def test_event_id_retry_fields_and_comments() -> None:
    raw = b": keep-alive\nevent: content_block_delta\nid: 7\nretry: 1500\ndata: {}\n\n"
    assert parse(raw) == [SSEEvent("{}", "content_block_delta", "7", 1500)]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    events = parse(b"event: ping\ndata: a\n\ndata: b\n\n")
    assert [e.event for e in events] == ["ping", "message"]


def test_only_one_leading_space_is_stripped_and_colonless_fields_are_empty() -> None:
    assert parse(b"data:  two spaces\n\n") == [SSEEvent(" two spaces")]
    assert parse(b"data:no-space\n\n") == [SSEEvent("no-space")]
    assert parse(b"data\n\n") == [SSEEvent("")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert parse(b"\n\n: comment\n\nevent: x\n\n") == []


def test_crlf_cr_and_lf_line_endings() -> None:
    expected = [SSEEvent("a"), SSEEvent("b")]
    assert parse(b"data: a\r\n\r\ndata: b\r\n\r\n") == expected
    assert parse(b"data: a\r\rdata: b\r\r") == expected
    assert parse(b"data: a\n\ndata: b\r\n\r\n") == expected


def test_crlf_split_between_cr_and_lf_counts_once() -> None:
    # Were the LF after a chunk-final CR a second line ending, the blank line it
    # makes would dispatch "a" alone.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("a\nb")]
    assert parse(b"data: a\r\n\r", b"\n") == [SSEEvent("a")]


def test_multibyte_utf8_split_across_chunks() -> None:
    raw = "data: héllo — ☃ 🎉\n\n".encode()
    cut = raw.index("🎉".encode()) + 2  # inside the 4-byte emoji
    assert parse(raw[:cut], raw[cut:]) == [SSEEvent("héllo — ☃ 🎉")]


def test_unfinished_event_at_the_end_is_not_dispatched() -> None:
    assert parse(b"data: complete\n\ndata: partial") == [SSEEvent("complete")]
    assert parse(b"data: partial\n") == []


def test_an_id_with_nul_is_ignored_and_bad_retry_too() -> None:
    assert parse(b"id: a\x00b\nretry: soon\ndata: x\n\n") == [SSEEvent("x")]


STREAM = (
    'event: message_start\r\ndata: {"a": "ünïcödé ☃"}\r\n\r\n'
    ": ping\n\n"
    "data: line one\ndata: line two\n\n"
    "event: x\rdata: 🎉\r\r"
    "data: [DONE]\n\n"
).encode()


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert parse(*chunks) == parse(STREAM)
    assert parse(STREAM) == [
        SSEEvent('{"a": "ünïcödé ☃"}', "message_start"),
        SSEEvent("line one\nline two"),
        SSEEvent("🎉", "x"),
        SSEEvent("[DONE]"),
    ]


def test_byte_by_byte() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == parse(STREAM)
