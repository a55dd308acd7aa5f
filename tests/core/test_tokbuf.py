"""TokenBuffer: the native per-stream text buffer between a decoder and its readers.

Behaviour tests run against the native buffer and its pure-Python twin
(``_tokbuf_ref``); property tests compare the two after every append and
both against the plain definition (decode with "replace", cut at the first
stop string).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from _tokbuf_ref import RefTokenBuffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openheim._core import TokenBuffer, TokenReader
from openheim.errors import (
    ConfigError,
    StreamClosed,
    StreamDiscarded,
    StreamFailed,
    StreamTimeout,
)

Make = Callable[..., Any]


@pytest.fixture(params=["native", "reference"])
def make(request: pytest.FixtureRequest) -> Make:
    return TokenBuffer if request.param == "native" else RefTokenBuffer


def feed(buf: Any, pieces: Sequence[bytes]) -> str:
    """Append pieces, reading after each one; return everything read."""
    r = buf.reader()
    out = []
    for i, p in enumerate(pieces):
        buf.append(i, p)
        out.append(r.read_nowait())
    buf.finish()
    return "".join(out) + drain(r)


def drain(reader: Any) -> str:
    """Read a finished stream to its end."""
    out = []
    while True:
        try:
            out.append(reader.read_nowait())
        except StreamClosed:
            return "".join(out)


def take(reader: Any) -> str | None:
    """What a non-blocking read returns now; None at the end of the stream."""
    try:
        return str(reader.read_nowait())
    except StreamClosed:
        return None


def expected(data: bytes, stops: Sequence[str]) -> tuple[str, str | None]:
    """The definition: decode with "replace", cut at the leftmost stop (shortest, first)."""
    text = data.decode("utf-8", "replace")
    hits = [(text.find(s), len(s), k) for k, s in enumerate(stops) if s in text]
    if not hits:
        return text, None
    pos, _, k = min(hits)
    return text[:pos], stops[k]


# -- UTF-8 ------------------------------------------------------------------------


def test_plain_pieces_pass_through(make: Make) -> None:
    buf = make()
    assert feed(buf, [b"Hel", b"lo", b" world"]) == "Hello world"
    assert buf.finish_reason == "stop"
    assert buf.n_tokens == 3
    assert buf.tokens() == [0, 1, 2]


def test_split_characters_are_held_until_complete(make: Make) -> None:
    buf = make()
    r = buf.reader()
    euro = "€".encode()
    assert buf.append(1, b"a" + euro[:1]) is True
    assert r.read_nowait() == "a"
    buf.append(2, euro[1:2])
    assert r.read_nowait() == ""
    buf.append(3, euro[2:] + "😀".encode()[:3])
    assert r.read_nowait() == "€"
    buf.append(4, "😀".encode()[3:])
    assert r.read_nowait() == "😀"


@pytest.mark.parametrize(
    ("pieces", "text"),
    [
        ([b"a\xffb"], "a\ufffdb"),  # never valid
        ([b"\xe2\x82", b"A"], "\ufffdA"),  # broken sequence: one U+FFFD, next byte kept
        ([b"\xed\xa0\x80"], "\ufffd\ufffd\ufffd"),  # encoded surrogate
        ([b"\xf0\x80\x80\x80"], "\ufffd" * 4),  # overlong
        ([b"\xf4\x90\x80\x80"], "\ufffd" * 4),  # past U+10FFFF
        ([b"ok\xf0\x9f\x98"], "ok\ufffd"),  # incomplete at the end
        ([b"\xc3", b"\xc3\xa9"], "\ufffdé"),
    ],
)
def test_invalid_bytes_become_replacement_chars(make: Make, pieces: list[bytes], text: str) -> None:
    assert b"".join(pieces).decode("utf-8", "replace") == text
    assert feed(make(), pieces) == text


def test_bytes_that_cannot_become_a_character_are_not_held(make: Make) -> None:
    buf = make()
    r = buf.reader()
    buf.append(1, b"\xed\xa0")  # the start of an encoded surrogate: never valid
    assert r.read_nowait() == "\ufffd\ufffd"
    buf.append(2, b"\xf0\x9f")  # could still be an emoji
    assert r.read_nowait() == ""


def test_str_pieces_are_utf8(make: Make) -> None:
    assert feed(make(), ["é", "t€"]) == "ét€"


# -- stop strings -------------------------------------------------------------------


def test_stop_across_pieces_is_never_seen(make: Make) -> None:
    buf = make(stop=["</s>"])
    r = buf.reader()
    assert buf.append(1, b"Hi <")
    assert r.read_nowait() == "Hi "  # "<" could start the stop string
    assert buf.append(2, b"/")
    assert buf.append(3, b"s")
    assert r.read_nowait() == ""
    assert buf.append(4, b">tail") is False
    with pytest.raises(StreamClosed):
        r.read_nowait()
    assert buf.finished
    assert buf.finish_reason == "stop"
    assert buf.stop_matched == "</s>"
    assert buf.getvalue() == "Hi "
    assert buf.append(5, b"more") is False
    assert buf.n_tokens == 4  # the token completing the stop counts; later ones do not
    assert buf.finish("length") is False
    assert buf.finish_reason == "stop"


def test_a_prefix_that_is_not_a_stop_is_released(make: Make) -> None:
    buf = make(stop=["</s>"])
    r = buf.reader()
    buf.append(1, b"a </")
    assert r.read_nowait() == "a "
    buf.append(2, b"b>")
    assert r.read_nowait() == "</b>"


def test_stop_inside_one_piece(make: Make) -> None:
    buf = make(stop="STOP")
    assert buf.append(1, b"abcSTOPdef") is False
    assert buf.getvalue() == "abc"


def test_stop_straddling_a_split_character(make: Make) -> None:
    euro = "€".encode()
    buf = make(stop=["x€y"])
    for i, p in enumerate([b"ax", euro[:2], euro[2:], b"y!"]):
        buf.append(i, p)
    assert buf.getvalue() == "a"
    assert buf.stop_matched == "x€y"


def test_stop_may_contain_a_replacement_char(make: Make) -> None:
    buf = make(stop=["\ufffd"])
    assert buf.append(1, b"ok\xe2\x82") is True  # could still become a character
    buf.finish("length")
    assert buf.getvalue() == "ok"
    assert buf.finish_reason == "stop"


def test_overlapping_stops_report_the_shortest_at_the_same_start(make: Make) -> None:
    buf = make(stop=["abc", "ab"])
    assert buf.append(1, b"xab") is False
    assert buf.getvalue() == "x"
    assert buf.stop_matched == "ab"


def test_a_stop_inside_a_longer_one_waits_for_it(make: Make) -> None:
    buf = make(stop=["abcd", "bc"])
    r = buf.reader()
    assert buf.append(1, b"zabc") is True  # "bc" matched, but "abcd" began earlier
    assert r.read_nowait() == "z"
    assert buf.append(2, b"d") is False
    assert buf.stop_matched == "abcd"
    assert buf.getvalue() == "z"

    buf = make(stop=["abcd", "bc"])
    buf.append(1, b"zabc")
    assert buf.append(2, b"x") is False
    assert buf.stop_matched == "bc"
    assert buf.getvalue() == "za"

    buf = make(stop=["abcd", "bc"])
    buf.append(1, b"zabc")
    assert buf.finish("length") is True
    assert buf.finish_reason == "stop"
    assert buf.getvalue() == "za"


def test_held_prefix_is_emitted_at_finish(make: Make) -> None:
    buf = make(stop=["User:"])
    r = buf.reader()
    buf.append(1, b"Use")
    assert r.read_nowait() == ""
    buf.finish("length")
    assert r.read_nowait() == "Use"
    assert buf.finish_reason == "length"
    assert buf.stop_matched is None


@pytest.mark.parametrize("bad", [[""], ["ok", ""], [b"x"], ["\ud800"]])
def test_bad_stop_strings(make: Make, bad: list[Any]) -> None:
    with pytest.raises(ConfigError):
        make(stop=bad)


# -- ending -------------------------------------------------------------------------


def test_fail_with_a_message(make: Make) -> None:
    buf = make()
    r = buf.reader()
    buf.append(1, b"partial")
    assert buf.fail("llama_decode returned -1") is True
    assert buf.fail("again") is False
    assert buf.finish_reason == "error"
    assert r.read_nowait() == "partial"
    for _ in range(2):
        with pytest.raises(StreamFailed, match="llama_decode returned -1"):
            r.read_nowait()


def test_fail_with_an_exception_raises_it_in_every_reader(make: Make) -> None:
    buf = make()
    a, b = buf.reader(), buf.reader()
    err = RuntimeError("decoder crashed")
    buf.fail(err)
    with pytest.raises(RuntimeError) as ei:
        a.read_nowait()
    assert ei.value is err
    with pytest.raises(RuntimeError):
        b.read_nowait()


def test_keep_tokens_false_counts_only(make: Make) -> None:
    buf = make(keep_tokens=False)
    buf.append(7, b"a")
    buf.append(8, b"b")
    assert buf.n_tokens == 2
    assert buf.tokens() == []


def test_append_many_is_append_in_turn(make: Make) -> None:
    buf = make(stop=["</s>"])
    assert buf.append_many([1, 2], [b"a<", b"/s"]) is True
    assert buf.append_many([3, 4, 5], [b">", b"x", b"y"]) is False
    assert buf.tokens() == [1, 2, 3]
    assert buf.getvalue() == "a"


# -- readers and offsets ----------------------------------------------------------


def test_readers_at_character_offsets(make: Make) -> None:
    buf = make()
    buf.append(1, "a€😀b".encode())
    assert buf.n_chars == 4
    assert [buf.reader(i).read_nowait() for i in range(4)] == ["a€😀b", "€😀b", "😀b", "b"]
    late = buf.reader(4)
    assert late.read_nowait() == ""
    buf.append(2, b"c")
    assert late.read_nowait() == "c"
    assert late.offset == 5
    with pytest.raises(ConfigError, match="past the end"):
        buf.reader(6)


# -- property tests -----------------------------------------------------------------

CHARS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["é", "€", "中", "😀", "👍🏽", "e\u0301", "\u200d", "\U0010ffff", "\x00"]),
)
SMALL = st.sampled_from(["a", "b", "é", "😀", "\u0301"])  # makes stops occur and overlap


@st.composite
def text_and_stops(draw: st.DrawFn) -> tuple[str, list[str]]:
    alphabet = draw(st.sampled_from([CHARS, SMALL]))
    text = "".join(draw(st.lists(alphabet, max_size=40)))
    stops = []
    for _ in range(draw(st.integers(0, 4))):
        if text and draw(st.booleans()):
            i = draw(st.integers(0, len(text) - 1))
            stops.append(text[i : i + draw(st.integers(1, 5))])
        else:
            stops.append(draw(st.text(SMALL, min_size=1, max_size=4)))
    return text, stops


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = sorted(draw(st.sets(st.integers(0, len(data)), max_size=len(data) + 1)))
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_both(pieces: list[bytes], stops: list[str]) -> tuple[str, TokenBuffer]:
    """Feed native and twin alike, comparing what a reader sees after every append."""
    native, twin = TokenBuffer(stop=stops), RefTokenBuffer(stop=stops)
    rn, rt = native.reader(), twin.reader()
    seen = []
    for i, p in enumerate(pieces):
        assert native.append(i, p) == twin.append(i, p)
        got = take(rn)
        assert got == take(rt)
        seen.append(got or "")
    native.finish("length")
    twin.finish("length")
    got = drain(rn)
    assert got == drain(rt)
    seen.append(got)
    assert native.finish_reason == twin.finish_reason
    assert native.stop_matched == twin.stop_matched
    assert native.n_tokens == twin.n_tokens
    return "".join(seen), native


@PROPS
@given(st.data(), text_and_stops())
def test_prop_valid_text_any_split(data: st.DataObject, case: tuple[str, list[str]]) -> None:
    text, stops = case
    raw = text.encode()
    pieces = data.draw(cuts(raw))
    out, native = run_both(pieces, stops)
    want, stop = expected(raw, stops)
    assert out == want
    assert native.stop_matched == stop
    assert native.getvalue() == want
    assert "\ufffd" not in out
    assert not any("\ud800" <= c <= "\udfff" for c in out)


@PROPS
@given(
    st.data(),
    st.binary(max_size=40),
    st.lists(st.text(SMALL | st.just("\ufffd"), min_size=1, max_size=3), max_size=3),
)
def test_prop_arbitrary_bytes(data: st.DataObject, raw: bytes, stops: list[str]) -> None:
    pieces = data.draw(cuts(raw))
    out, _ = run_both(pieces, stops)
    assert out == expected(raw, stops)[0]


@PROPS
@given(st.data(), st.lists(CHARS, max_size=30).map("".join))
def test_prop_readers_at_offsets_see_the_same_suffix(data: st.DataObject, text: str) -> None:
    buf = TokenBuffer()
    pieces = data.draw(cuts(text.encode()))
    readers: list[TokenReader] = []
    for i, p in enumerate(pieces):
        buf.append(i, p)
        readers.append(buf.reader(data.draw(st.integers(0, buf.n_chars))))
    buf.finish()
    full = buf.getvalue()
    assert full == text
    for r in readers:
        start = r.offset
        assert "".join(r) == full[start:]


@PROPS
@given(st.data(), text_and_stops())
def test_prop_append_many_matches_append(data: st.DataObject, case: tuple[str, list[str]]) -> None:
    text, stops = case
    pieces = data.draw(cuts(text.encode()))
    one, many = TokenBuffer(stop=stops), TokenBuffer(stop=stops)
    for i, p in enumerate(pieces):
        one.append(i, p)
    size = data.draw(st.integers(1, 5))
    for j in range(0, len(pieces), size):
        many.append_many(range(j, j + len(pieces[j : j + size])), pieces[j : j + size])
    assert many.getvalue() == one.getvalue()
    assert many.tokens() == one.tokens()
    assert many.finished == one.finished


# -- native only: arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": 10, "retain_bytes": 11}, "retain_bytes"),
        ({"retain_bytes": -1}, "retain_bytes"),
    ],
)
def test_bad_limits(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TokenBuffer(**kwargs)


def test_bad_appends() -> None:
    buf = TokenBuffer()
    with pytest.raises(ConfigError, match="32 bits"):
        buf.append(2**31, b"x")
    with pytest.raises(TypeError, match="token piece"):
        buf.append(1, 3.5)
    with pytest.raises(ConfigError, match="2 token ids but 1 pieces"):
        buf.append_many([1, 2], [b"x"])
    with pytest.raises(ConfigError, match=">= 0"):
        buf.reader(-1)
    with pytest.raises(TypeError):
        TokenReader()
    assert buf.append(-1, bytearray(b"by")) is True
    assert buf.append(-1, memoryview(b"te")) is True
    assert buf.getvalue() == "byte"


# -- native only: memory ------------------------------------------------------------


def test_read_text_is_discarded_beyond_the_retention_window() -> None:
    buf = TokenBuffer(retain_bytes=8)
    r = buf.reader()
    for i in range(10):
        buf.append(i, b"0123456789")
    assert r.read_nowait() == "0123456789" * 10
    assert buf.retained_offset == 92
    assert buf.getvalue() == "23456789"
    with pytest.raises(StreamDiscarded, match=r"offset 3 .* oldest retained offset is 92"):
        buf.reader(3)
    assert buf.reader(95).read_nowait() == "56789"


def test_unread_text_is_kept_for_a_slow_reader() -> None:
    buf = TokenBuffer(retain_bytes=0)
    slow = buf.reader()
    for i in range(50):
        buf.append(i, b"abcd")
    assert buf.retained_offset == 0
    assert len(slow.read_nowait()) == 200
    assert buf.retained_offset == 200


def test_max_bytes_cuts_off_a_lagging_reader() -> None:
    buf = TokenBuffer(max_bytes=64)
    lagging = buf.reader()
    for i in range(40):
        buf.append(i, "é€".encode())  # 5 bytes, 2 characters
    assert buf.n_chars == 80
    assert buf.retained_offset > 0
    assert len(buf.getvalue().encode()) <= 64
    assert buf.getvalue() == ("é€" * 40)[buf.retained_offset :]
    with pytest.raises(StreamDiscarded, match=r"fell behind.*offset 0"):
        lagging.read_nowait()
    fresh = buf.reader(buf.retained_offset)
    assert fresh.read_nowait() == buf.getvalue()


def test_closed_and_collected_readers_stop_pinning_text() -> None:
    buf = TokenBuffer(retain_bytes=0)
    r = buf.reader()
    buf.reader()  # dropped at once
    gc.collect()
    assert buf.n_readers == 1
    buf.append(1, b"hello")
    assert buf.retained_offset == 0
    r.close()
    assert r.closed
    assert buf.n_readers == 0
    buf.append(2, b"!")
    assert buf.retained_offset == 6
    with pytest.raises(StreamClosed, match="reader is closed"):
        r.read_nowait()


def test_reader_in_a_reference_cycle_is_collected() -> None:
    buf = TokenBuffer(retain_bytes=0)

    class Holder:
        pass

    h = Holder()
    h.reader = buf.reader()  # type: ignore[attr-defined]
    h.self = h  # type: ignore[attr-defined]
    del h
    gc.collect()
    assert buf.n_readers == 0


# -- native only: waiting -----------------------------------------------------------

PIECES = [f"tok{i} é😀 ".encode() for i in range(3000)]
TEXT = b"".join(PIECES).decode()


def append_in_thread(
    buf: TokenBuffer, pieces: list[bytes], then: str = "finish"
) -> threading.Thread:
    def run() -> None:
        for i, p in enumerate(pieces):
            buf.append(i, p)
            if i % 100 == 0:
                threading.Event().wait(0.001)  # let the reader catch up and park
        if then == "finish":
            buf.finish("length")
        else:
            buf.fail(then)

    t = threading.Thread(target=run)
    t.start()
    return t


async def test_thread_appender_async_reader() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    t = append_in_thread(buf, PIECES)
    chunks = [chunk async for chunk in reader]
    t.join()
    assert "".join(chunks) == TEXT
    assert buf.finish_reason == "length"


async def test_thread_appender_many_async_readers_with_stop() -> None:
    buf = TokenBuffer(stop=["tok2500 "])
    readers = [buf.reader() for _ in range(3)]

    async def collect(r: TokenReader) -> str:
        return "".join([c async for c in r])

    t = append_in_thread(buf, PIECES)
    outs = await asyncio.gather(*(collect(r) for r in readers))
    t.join()
    want = TEXT[: TEXT.index("tok2500 ")]
    assert outs == [want] * 3
    assert buf.stop_matched == "tok2500 "


def test_thread_appender_blocking_reader() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    t = append_in_thread(buf, PIECES)
    text = "".join(reader)  # blocking iteration
    t.join()
    assert text == TEXT


def test_finish_wakes_a_blocked_reader() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    result: list[BaseException] = []
    started = threading.Event()

    def block() -> None:
        started.set()
        try:
            reader.read()
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=block)
    t.start()
    started.wait()
    buf.finish()
    t.join(timeout=30)
    assert not t.is_alive()
    assert isinstance(result[0], StreamClosed)


def test_fail_wakes_a_blocked_reader_after_its_text() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    t = append_in_thread(buf, PIECES[:50], then="out of memory")
    got: list[str] = []

    def read_all() -> None:
        while True:
            got.append(reader.read(timeout=30))

    with pytest.raises(StreamFailed, match="out of memory"):
        read_all()
    t.join()
    assert "".join(got) == b"".join(PIECES[:50]).decode()


def test_close_wakes_a_reader_blocked_in_another_thread() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    result: list[BaseException] = []

    def block() -> None:
        try:
            reader.read()
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=block)
    t.start()
    reader.close()
    t.join(timeout=30)
    assert not t.is_alive()
    assert isinstance(result[0], StreamClosed)


def test_read_timeout() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    with pytest.raises(StreamTimeout, match=r"within 0\.01 s"):
        reader.read(timeout=0.01)
    with pytest.raises(TimeoutError):
        reader.read(timeout=0)
    buf.append(1, b"x")
    assert reader.read(timeout=0) == "x"


async def test_async_reader_woken_by_finish_on_the_loop() -> None:
    buf = TokenBuffer()
    reader = buf.reader()
    task = asyncio.ensure_future(reader.read_async())
    await asyncio.sleep(0)
    buf.append(1, b"a")
    assert await task == "a"
    task = asyncio.ensure_future(reader.read_async())
    await asyncio.sleep(0)
    buf.finish()
    with pytest.raises(StreamClosed):
        await task


async def test_cancelled_async_read_does_not_lose_a_wakeup() -> None:
    buf = TokenBuffer()
    a, b = buf.reader(), buf.reader()
    ta = asyncio.ensure_future(a.read_async())
    tb = asyncio.ensure_future(b.read_async())
    await asyncio.sleep(0)
    ta.cancel()
    t = append_in_thread(buf, [b"x"])
    assert await asyncio.wait_for(tb, 30) == "x"
    t.join()
    with pytest.raises(asyncio.CancelledError):
        await ta


async def test_context_manager_and_offsets_for_replay() -> None:
    buf = TokenBuffer()
    buf.append(1, "día ".encode())
    with buf.reader() as first:
        got = first.read_nowait()
        last_event_id = first.offset
    assert first.closed
    buf.append(2, "ñu".encode())
    buf.finish()
    replay = buf.reader(last_event_id)
    assert got + "".join([c async for c in replay]) == "día ñu"
