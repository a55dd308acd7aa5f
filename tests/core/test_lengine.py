"""The native llama step loop's C pieces: candidate scans, and the loop itself.

The scans are checked against plain Python definitions; the loop runs on a
tiny random-weight GGUF (llama tests: skipped without llama-cpp-python), which
``make asan`` also runs under AddressSanitizer.
"""

from __future__ import annotations

import array
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openheim._core import TokenBuffer, argmax, argmax_split, top_k
from openheim.errors import ConfigError

logit = st.floats(min_value=-50, max_value=50, width=32, allow_nan=False)
small_ints = st.integers(min_value=-4, max_value=4).map(float)  # many ties


def _f32(xs: list[float]) -> array.array[float]:
    return array.array("f", xs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(logit, small_ints), min_size=1, max_size=300))
def test_argmax_is_the_first_largest(xs: list[float]) -> None:
    a = _f32(xs)
    best = max(a)
    assert argmax(a) == list(a).index(best)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(logit, small_ints), min_size=1, max_size=300), st.integers(1, 80))
def test_top_k_is_the_k_best_lower_token_first(xs: list[float], k: int) -> None:
    a = _f32(xs)
    want = sorted(range(len(a)), key=lambda i: (-a[i], i))[:k]
    got = top_k(a, k)
    assert [t for t, _ in got] == want
    assert [v for _, v in got] == [a[i] for i in want]


def test_argmax_over_a_whole_vocabulary_keeps_the_first_of_ties() -> None:
    """The one-pass scan: ties across lanes, accumulators and the scalar tail."""
    import random

    rng = random.Random(5)
    for n in (262_144, 262_147, 31, 17):
        xs = [float(rng.randint(-3, 3)) for _ in range(n)]
        assert argmax(_f32(xs)) == xs.index(max(xs))
        for where in (n - 1, n // 2, 9, 8, 0):  # a single new maximum anywhere
            ys = list(xs)
            ys[where] = 7.0
            ys[-1] = 7.0 if where != n - 1 else ys[-1]  # and a later tie
            assert argmax(_f32(ys)) == where


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(logit, small_ints, st.just(float("-inf"))), min_size=1, max_size=300),
    st.integers(1, 70),
)
def test_argmax_split_as_the_graph_threads_do_is_argmax(xs: list[float], parts: int) -> None:
    """The in-graph op cuts a row between the graph's threads and puts the
    chunks' maxima together: the same first largest logit, ties across chunks."""
    a = _f32(xs)
    assert argmax_split(a, parts) == argmax(a) == list(a).index(max(a))


def test_argmax_split_edge_rows() -> None:
    nan, inf = float("nan"), float("inf")
    for parts in (1, 2, 3, 8, 64):
        assert argmax_split(_f32([nan] * 40), parts) == 0  # all NaN: index 0, as llama.cpp
        assert argmax_split(_f32([nan] * 20 + [-inf] * 20), parts) == 20
        assert argmax_split(_f32([-inf] * 33 + [2.0] + [nan] * 30 + [2.0]), parts) == 33
        assert argmax_split(_f32([1.0] * 17 + [inf] + [inf]), parts) == 17
        big = [0.0] * 262_144
        big[200_000] = big[262_143] = 1.0  # a tie in the last chunks
        assert argmax_split(_f32(big), parts) == 200_000


def test_scans_handle_infinities_and_long_inputs() -> None:
    xs = [float("-inf")] * 1000
    assert argmax(_f32(xs)) == 0  # llama.cpp's greedy keeps the first
    xs[777] = float("inf")
    xs[5] = 3.0
    assert argmax(_f32(xs)) == 777
    assert [t for t, _ in top_k(_f32(xs), 2)] == [777, 5]
    with pytest.raises(ConfigError):
        argmax(_f32([]))
    assert top_k(_f32([1.0]), 0) == []


# -- the loop on a real llama.cpp context --------------------------------------------------


@pytest.fixture(scope="module")
def handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from openheim.models._llama.bindings import LlamaHandle
    from openheim.testing.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    h = LlamaHandle(str(path), n_ctx=256, n_batch=64, n_seq_max=3, n_threads=1, n_gpu_layers=0)
    yield h
    h.close()


@pytest.fixture
def engine(handle: Any) -> Iterator[Any]:
    from openheim.models._llama.engine import Engine

    e = Engine(handle, prefill_chunk=16, sample_threads=2)
    yield e
    e.close()


def _run(engine: Any, handle: Any, text: str, **kw: Any) -> tuple[Any, TokenBuffer]:
    from openheim.models._llama.engine import GenRequest

    done = threading.Event()
    buf = TokenBuffer()
    kw.setdefault("max_tokens", 12)
    req = GenRequest(handle.tokenize(text), buffer=buf, on_done=lambda r: done.set(), **kw)
    engine.submit(req)
    assert done.wait(120)
    return req, buf


@pytest.mark.llama
def test_loop_generates_samples_and_retires(engine: Any, handle: Any) -> None:
    greedy, gbuf = _run(engine, handle, "hello", ignore_eos=True)
    assert greedy.finish_reason == "length"
    assert len(gbuf.tokens()) == 12
    again, abuf = _run(engine, handle, "hello", ignore_eos=True)
    assert abuf.tokens() == gbuf.tokens()  # greedy, and the prefix came from the cache
    assert again.n_cached > 0
    # several sequences per step, sampled on the pool, a long prompt in chunks
    from openheim.models._llama.engine import GenRequest

    events = [threading.Event() for _ in range(5)]
    bufs = [TokenBuffer() for _ in range(5)]
    for i in range(5):
        engine.submit(
            GenRequest(
                handle.tokenize(("word " * 40) if i == 0 else f"prompt {i}"),
                buffer=bufs[i],
                max_tokens=10,
                temperature=0.9,
                top_k=[40, 0, 20, 0, 5][i],
                min_p=[None, 0.05, None, None, 0.2][i],
                top_p=[None, None, 0.8, 0.9, None][i],
                seed=i,
                ignore_eos=True,
                on_done=lambda r, ev=events[i]: ev.set(),
            )
        )
    for ev in events:
        assert ev.wait(120)
    assert all(len(b.tokens()) == 10 for b in bufs)
    assert engine.max_batch_seqs >= 2


@pytest.mark.llama
def test_loop_constrained_and_cancelled(engine: Any, handle: Any) -> None:
    from openheim.models._llama.grammar import schema_to_gbnf

    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 5}, "b": {"enum": [1, 2, 3]}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    for temperature in (0.0, 1.0):
        req, buf = _run(
            engine,
            handle,
            "json please",
            gbnf=schema_to_gbnf(schema),
            temperature=temperature,
            seed=1,
            max_tokens=64,
        )
        assert req.finish_reason == "stop"
        doc = json.loads(buf.getvalue())
        assert doc["b"] in (1, 2, 3)
        assert len(doc["a"]) <= 5
    from openheim.models._llama.engine import GenRequest

    done = threading.Event()
    buf = TokenBuffer()
    req = GenRequest(
        handle.tokenize("endless"),
        buffer=buf,
        max_tokens=1_000_000,
        ignore_eos=True,
        on_done=lambda r: done.set(),
    )
    engine.submit(req)
    while buf.n_tokens < 3:
        pass
    req.cancel()
    assert done.wait(120)
    assert req.finish_reason == "cancelled"
    assert buf.finish_reason == "cancelled"


@pytest.mark.llama
def test_loop_refuses_bad_submissions(engine: Any, handle: Any) -> None:
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        engine.native.submit(None, [handle.n_vocab + 5], TokenBuffer(), max_tokens=1)
    with pytest.raises(ConfigError, match="at least one prompt token"):
        engine.native.submit(None, [], TokenBuffer(), max_tokens=1)
    with pytest.raises(ConfigError, match="sampler chain"):
        engine.native.submit(None, [1], TokenBuffer(), max_tokens=1, temperature=0.5)


@pytest.mark.llama
def test_loop_session_cache_spills_to_disk_and_reads_back(handle: Any, tmp_path: Any) -> None:
    """Memory tier 0 bytes, disk tier on: the C paths that write, read, evict
    and remove the files (run under ASan by ``make asan``)."""
    from openheim.models._llama.engine import Engine

    e = Engine(
        handle, prefill_chunk=16, kv_cache_bytes=0, kv_dir=str(tmp_path), kv_disk_bytes=1 << 30
    )
    try:
        texts = [f"session {i} " + "lorem ipsum dolor " * 3 for i in range(3)]  # 64 tokens
        first = [_run(e, handle, t, ignore_eos=True, max_tokens=4) for t in texts]
        # three sessions on three slots: nothing saved yet; a fourth takes a slot
        _run(e, handle, "another one", ignore_eos=True)
        st = e.stats()
        assert st["kv_spilled"] == st["kv_disk_entries"] == len(list(tmp_path.iterdir())) == 1
        # the evicted session returns: read back from its file, same greedy tokens
        req, buf = _run(e, handle, texts[0], ignore_eos=True, max_tokens=4)
        assert e.stats()["kv_disk_restored"] == 1
        assert req.n_cached == len(handle.tokenize(texts[0])) - 1
        assert buf.tokens() == first[0][1].tokens()
        # a file that vanished is a miss, not an error for the request
        for f in tmp_path.iterdir():
            f.unlink()
        _run(e, handle, "one more", ignore_eos=True)
        _run(e, handle, "and more", ignore_eos=True)
        again, _ = _run(e, handle, texts[1], ignore_eos=True, max_tokens=4)
        assert again.finish_reason == "length"
        assert again.n_cached < len(handle.tokenize(texts[1])) // 2
        assert e.stats()["kv_disk_errors"] == 1  # its file was gone
    finally:
        e.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="not a directory"):
        Engine(handle, kv_dir=str(tmp_path / "missing"), kv_disk_bytes=1)


@pytest.mark.llama
def test_sampling_pool_picks_what_the_loop_alone_picks(handle: Any) -> None:
    """Steps sampled on 3 threads (the pool forced on a tiny vocabulary) give
    every request the tokens one thread gives it, greedy and seeded alike."""
    from openheim.models._llama.engine import Engine, GenRequest

    def run(threads: int, pool_min_work: int) -> tuple[list[list[int]], int]:
        e = Engine(handle, prefill_chunk=16, sample_threads=threads, pool_min_work=pool_min_work)
        try:
            events = [threading.Event() for _ in range(6)]
            bufs = [TokenBuffer() for _ in range(6)]
            for i in range(6):
                e.submit(
                    GenRequest(
                        handle.tokenize(f"pool prompt {i}"),
                        buffer=bufs[i],
                        max_tokens=16,
                        temperature=0.0 if i % 2 else 0.8,
                        top_k=[40, 0, 8][i % 3],
                        seed=i,
                        ignore_eos=True,
                        on_done=lambda r, ev=events[i]: ev.set(),
                    )
                )
            for ev in events:
                assert ev.wait(120)
            return [b.tokens() for b in bufs], e.stats()["parallel_samples"]
        finally:
            e.close()

    alone, none = run(1, 1 << 17)
    pooled, parallel = run(3, 0)
    assert none == 0
    assert parallel > 0
    assert pooled == alone


@pytest.mark.llama
@pytest.mark.parametrize("threads", [1, 2])
def test_backend_sampling_picks_what_the_host_picks(tmp_path: Any, threads: int) -> None:
    """The in-graph selection op (greedy argmax inside llama_decode, rows
    copied out for the host's chains and grammars) gives every request the
    tokens host sampling gives it, on 1 and 2 graph threads; and once that
    engine is closed the context hands raw logits to the next one again."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from openheim.models._llama.bindings import LlamaHandle
    from openheim.models._llama.engine import Engine, GenRequest
    from openheim.models._llama.grammar import schema_to_gbnf
    from openheim.testing.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    h = LlamaHandle(
        str(path), n_ctx=512, n_batch=64, n_seq_max=3, n_threads=threads, n_gpu_layers=0
    )
    gbnf = schema_to_gbnf(
        {
            "type": "object",
            "properties": {"a": {"type": "string", "maxLength": 6}},
            "required": ["a"],
            "additionalProperties": False,
        }
    )
    kinds: list[dict[str, Any]] = [
        {},
        {"temperature": 0.8, "top_k": 12, "seed": 3},
        {"temperature": 0.7, "top_k": 0, "min_p": 0.05, "seed": 4},
        {"gbnf": gbnf, "max_tokens": 40},
        {"gbnf": gbnf, "max_tokens": 40, "temperature": 1.0, "seed": 5},
    ]

    def run(backend: bool) -> tuple[list[list[int]], dict[str, Any]]:
        e = Engine(h, prefill_chunk=16, sample_threads=2, backend_sampling=backend)
        try:
            out = []
            for i, kw in enumerate(kinds):  # one at a time: the same batches both ways
                kw = dict(kw)
                kw.setdefault("max_tokens", 16)
                kw.setdefault("ignore_eos", "gbnf" not in kw)
                done = threading.Event()
                buf = TokenBuffer()
                e.submit(
                    GenRequest(
                        h.tokenize(f"backend prompt {i}"),
                        buffer=buf,
                        on_done=lambda r, ev=done: ev.set(),
                        **kw,
                    )
                )
                assert done.wait(120)
                out.append(buf.tokens())
            return out, dict(e.stats())
        finally:
            e.close()

    try:
        graph, gst = run(True)
        host, hst = run(False)
        again, _ = run(True)
    finally:
        h.close()
    assert gst["backend_sampling"] is True
    assert hst["backend_sampling"] is False
    assert gst["graph_sampled"] >= 15  # the plain greedy request's tokens after the first
    assert hst["graph_sampled"] == 0
    assert all(len(t) > 0 for t in host)
    assert graph == host == again
