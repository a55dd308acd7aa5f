"""The native step loop on a real llama.cpp context (tiny random-weight GGUF).

The loop runs without the GIL, samples exactly as llama-cpp-python's own
``Llama`` does for the same settings and seed, checks the C API it was built
against, and retires cancelled, queued and closed requests cleanly.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openheim._core import TokenBuffer
from openheim.errors import ModelError

pytestmark = pytest.mark.llama

N_TOKENS = 32


@pytest.fixture
def solo_model(tiny_gguf: Path) -> Iterator[Any]:
    """One sequence, the same context shape as the ``Llama`` baseline below."""
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_gguf), n_ctx=512, n_parallel=1, n_batch=512, n_threads=2)
    yield model
    model.close()


def _generate(model: Any, tokens: list[int], **kw: Any) -> tuple[Any, TokenBuffer]:
    from openheim.models._llama.engine import GenRequest

    done = threading.Event()
    buf = TokenBuffer()
    kw.setdefault("max_tokens", N_TOKENS)
    req = GenRequest(list(tokens), buffer=buf, on_done=lambda r: done.set(), **kw)
    model.engine.submit(req)
    assert done.wait(60), "the generation did not finish"
    return req, buf


SETTINGS = [
    {"temperature": 0.0},
    {"temperature": 0.8, "top_k": 40, "seed": 7},
    {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 5},
    {"temperature": 1.0, "top_k": 0, "min_p": 0.1, "seed": 3},
    {"temperature": 1.2, "top_k": 0, "seed": 11},
]


@pytest.mark.parametrize(
    "settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_sampling_matches_llama_cpp_python(
    solo_model: Any, tiny_gguf: Path, settings: dict[str, Any]
) -> None:
    """Same prompt, settings and seed: the same token stream as ``Llama.generate``."""
    from llama_cpp import Llama

    llm = Llama(
        str(tiny_gguf),
        n_ctx=512,
        n_batch=512,
        n_threads=2,
        n_threads_batch=2,
        seed=settings.get("seed", 0),
        verbose=False,
    )
    try:
        prompt = llm.tokenize(b"hello there my friend")
        theirs: list[int] = []
        for tok in llm.generate(
            prompt,
            temp=settings["temperature"],
            top_k=settings.get("top_k", 40),
            top_p=settings.get("top_p", 1.0),
            min_p=settings.get("min_p", 0.0),
            typical_p=1.0,
            repeat_penalty=1.0,
        ):
            theirs.append(tok)
            if len(theirs) == N_TOKENS:
                break
    finally:
        llm.close()
    req, buf = _generate(solo_model, prompt, ignore_eos=True, **settings)
    assert req.finish_reason == "length"
    assert buf.tokens() == theirs


def test_another_thread_holds_the_gil_while_tokens_keep_coming(solo_model: Any) -> None:
    """A Python thread that never lets go of the GIL still sees the generation advance."""
    from openheim.models._llama.engine import GenRequest

    prompt = solo_model._handle.tokenize("a long story")
    buf = TokenBuffer(keep_tokens=False)
    req = GenRequest(prompt, buffer=buf, max_tokens=1_000_000, ignore_eos=True)
    seen: dict[str, int] = {}

    def counter() -> None:
        # With a switch interval of 1000 s this thread keeps the GIL until it is done.
        start = buf.n_tokens
        count = 0
        while buf.n_tokens < start + 64 and count < 2_000_000_000:
            count += 1
        seen.update(start=start, end=buf.n_tokens, count=count, open=int(not buf.finished))

    solo_model.engine.submit(req)
    while buf.n_tokens == 0:  # the loop is generating
        pass
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        t = threading.Thread(target=counter)
        t.start()
        t.join()
    finally:
        sys.setswitchinterval(old)
        req.cancel()
    assert seen["end"] >= seen["start"] + 64, seen
    assert seen["count"] > 0, seen
    assert seen["open"] == 1, seen


def test_queued_requests_can_be_cancelled_before_they_start(solo_model: Any) -> None:
    from openheim.models._llama.engine import GenRequest

    prompt = solo_model._handle.tokenize("first")
    done = threading.Event()
    first_buf, second_buf = TokenBuffer(), TokenBuffer()
    first = GenRequest(prompt, buffer=first_buf, max_tokens=1_000_000, ignore_eos=True)
    second = GenRequest(prompt, buffer=second_buf, max_tokens=8, on_done=lambda r: done.set())
    solo_model.engine.submit(first)
    solo_model.engine.submit(second)  # one slot: waits behind `first`
    second.cancel()
    assert done.wait(60)
    assert second.finish_reason == "cancelled"
    assert second_buf.finish_reason == "cancelled"
    assert second_buf.n_tokens == 0
    first.cancel()


def test_close_ends_running_and_queued_requests(tiny_gguf: Path) -> None:
    from openheim.models._llama.engine import GenRequest
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_gguf), n_ctx=256, n_parallel=1, n_threads=1)
    prompt = model._handle.tokenize("go")
    bufs = [TokenBuffer(), TokenBuffer()]
    reqs = [GenRequest(prompt, buffer=b, max_tokens=1_000_000, ignore_eos=True) for b in bufs]
    engine = model.engine
    for r in reqs:
        engine.submit(r)
    model.close()
    for r, b in zip(reqs, bufs, strict=True):
        assert r.finish_reason == "error"
        assert isinstance(r.error, ModelError)
        assert "closed" in str(r.error)
        assert b.finished
    with pytest.raises(ModelError, match="closed"):
        engine.submit(GenRequest(prompt, buffer=TokenBuffer(), max_tokens=1))


def test_constrained_decoding_checks_the_sampled_token_natively(solo_model: Any) -> None:
    import json

    from openheim.models._llama.grammar import schema_to_gbnf

    schema = {
        "type": "object",
        "properties": {
            "n": {"enum": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},
            "s": {"type": "string", "maxLength": 6},
        },
        "required": ["n", "s"],
        "additionalProperties": False,
    }
    prompt = solo_model._handle.tokenize("give me a number")
    for seed in range(3):
        req, buf = _generate(
            solo_model,
            prompt,
            gbnf=schema_to_gbnf(schema),
            temperature=1.0,
            seed=seed,
            max_tokens=64,
        )
        assert req.finish_reason == "stop"
        doc = json.loads(buf.getvalue())
        assert set(doc) == {"n", "s"}
        assert 0 <= doc["n"] <= 9
        assert len(doc["s"]) <= 6
        assert req.grammar_checks == req.n_generated
        # random weights: the grammar refuses often, and each refusal is resolved
        assert req.partial_masks + req.full_masks <= req.grammar_checks


def test_abi_check_names_the_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from openheim.models._llama import bindings

    bindings.check_native_abi()  # the installed llama-cpp-python matches
    monkeypatch.setattr(bindings, "_abi_checked", False)
    monkeypatch.setitem(bindings._SIGNATURES, "llama_decode", (4, (8, 64)))
    with pytest.raises(ModelError, match=r"pip install llama-cpp-python==0\.3\.36.*llama_decode"):
        bindings.check_native_abi()


def test_struct_layouts_match_llama_cpp_ctypes() -> None:
    import ctypes

    import llama_cpp as lc

    from openheim._core import llama_layout

    for name in ("llama_batch", "llama_token_data", "llama_token_data_array"):
        ct = getattr(lc, name)
        assert llama_layout(name) == ctypes.sizeof(ct)
        for field, _ in ct._fields_:
            assert llama_layout(name, field) == getattr(ct, field).offset
    assert llama_layout("llama_batch", "no_such_field") == -1


def test_the_loop_times_its_steps(solo_model: Any) -> None:
    prompt = solo_model._handle.tokenize("count")
    before = solo_model.engine.stats()
    _generate(solo_model, prompt, ignore_eos=True)
    after = solo_model.engine.stats()
    steps = after["steps"] - before["steps"]
    assert steps >= N_TOKENS  # one step per generated token (the prompt fits one step)
    assert after["decode_ns"] > before["decode_ns"]
    assert after["host_ns"] > before["host_ns"]
    assert after["generated"] - before["generated"] == N_TOKENS


def test_a_session_gets_its_kv_back_after_its_slot_served_others(tiny_gguf: Path) -> None:
    """One slot, two sessions taking turns: the returning one re-reads nothing."""
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_gguf), n_ctx=1024, n_parallel=1, n_threads=1, kv_cache_mb=64)
    try:
        tok = model._handle.tokenize
        history_a = tok("session a " + "the quick brown fox jumps over the lazy dog " * 8)
        history_b = tok("session b " + "a completely different conversation here " * 8)
        first_a, buf_a = _generate(model, history_a, ignore_eos=True, max_tokens=8)
        _generate(model, history_b, ignore_eos=True, max_tokens=8)  # the slot now holds b
        stats = model.engine.stats()
        assert stats["kv_saved"] == 1
        # a's next turn: its history, its reply, a new message
        turn2 = history_a + buf_a.tokens() + tok(" and then?", add_special=False)
        second_a, _ = _generate(model, turn2, ignore_eos=True, max_tokens=8)
        after = model.engine.stats()
        assert after["kv_restored"] == 1
        # everything a's slot had decoded came back (history and reply but its last token)
        assert second_a.n_cached == len(history_a) + 8 - 1
        assert (
            after["prompt_evaluated"] - stats["prompt_evaluated"] == len(turn2) - second_a.n_cached
        )
        assert first_a.finish_reason == second_a.finish_reason == "length"
    finally:
        model.close()


def test_restored_state_decodes_like_a_fresh_read(tiny_gguf: Path) -> None:
    """Greedy tokens after a restore equal those after reading the whole prompt again."""
    from openheim.models.llama import LlamaModel

    outputs = []
    for kv_mb in (64, 0):
        model = LlamaModel(str(tiny_gguf), n_ctx=1024, n_parallel=1, n_threads=1, kv_cache_mb=kv_mb)
        try:
            tok = model._handle.tokenize
            a = tok("one two three four five six seven eight nine ten " * 5)
            b = tok("other words entirely, nothing in common at all " * 5)
            _generate(model, a, ignore_eos=True, max_tokens=4)
            _generate(model, b, ignore_eos=True, max_tokens=4)
            _, buf = _generate(model, a + tok(" eleven", add_special=False), ignore_eos=True)
            outputs.append(buf.tokens())
            assert model.engine.stats()["kv_restored"] == (1 if kv_mb else 0)
        finally:
            model.close()
    assert outputs[0] == outputs[1]
