"""The session KV cache's disk tier, and the settings a GPU box passes to llama.cpp.

Real llama.cpp on the tiny generated GGUF: a session whose state was evicted
from memory to a file gets it back from that file when it returns (and decodes
exactly as if it had re-read its history); the files go when the model closes.
The offload settings reach llama.cpp as given (its own log says so).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from openheim._core import TokenBuffer
from openheim.errors import ConfigError

pytestmark = pytest.mark.llama


def _generate(model: Any, tokens: list[int], **kw: Any) -> tuple[Any, TokenBuffer]:
    from openheim.models._llama.engine import GenRequest

    done = threading.Event()
    buf = TokenBuffer()
    kw.setdefault("max_tokens", 8)
    req = GenRequest(list(tokens), buffer=buf, on_done=lambda r: done.set(), ignore_eos=True, **kw)
    model.engine.submit(req)
    assert done.wait(60), "the generation did not finish"
    return req, buf


def _histories(model: Any) -> list[list[int]]:
    tok = model._handle.tokenize
    words = ["alpha beta gamma", "red green blue", "one two three", "north south east"]
    return [tok(f"session {i} " + (w + " ") * 12) for i, w in enumerate(words)]


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _files(d: Path) -> list[Path]:
    return sorted(d.iterdir())


def test_a_session_comes_back_from_disk(tiny_gguf: Path, tmp_path: Path) -> None:
    """No memory tier: every saved state goes to a file and is read back from it."""
    from openheim.models.llama import LlamaModel

    kv_dir = tmp_path / "kv"
    kv_dir.mkdir()
    model = LlamaModel(
        str(tiny_gguf), n_ctx=1024, n_parallel=1, n_threads=1, kv_cache_mb=0, kv_cache_dir=kv_dir
    )
    try:
        a, b, c, _ = _histories(model)
        _first_a, buf_a = _generate(model, a)
        _generate(model, b)  # a's state is written to disk
        st = model.engine.stats()
        assert st["kv_spilled"] == 1
        assert st["kv_entries"] == 0
        assert st["kv_disk_entries"] == 1
        assert len(_files(kv_dir)) == 1
        assert _files(kv_dir)[0].stat().st_size == st["kv_disk_bytes"] > 0
        _generate(model, c)  # and b's
        assert len(_files(kv_dir)) == 2
        turn2 = a + buf_a.tokens() + model._handle.tokenize(" and then?", add_special=False)
        second_a, _ = _generate(model, turn2)
        after = model.engine.stats()
        assert after["kv_disk_restored"] == 1
        assert after["kv_restored"] == 1
        assert second_a.n_cached == len(a) + 8 - 1  # history and reply but its last token
        assert after["kv_disk_errors"] == 0
    finally:
        model.close()
    assert _files(kv_dir) == []  # the disk tier's files go with the model


def test_memory_evicts_to_disk_and_the_restore_decodes_like_a_fresh_read(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    """Memory holds one state: the older one moves to disk; greedy tokens after
    reading it back equal those of a model that re-read the whole prompt."""
    from openheim.models._llama.bindings import LlamaHandle
    from openheim.models._llama.engine import Engine

    outputs: list[list[int]] = []
    for tiered in (True, False):
        handle = LlamaHandle(
            str(tiny_gguf), n_ctx=1024, n_batch=512, n_seq_max=1, n_threads=1, n_gpu_layers=0
        )
        model: Any = type("M", (), {})()
        model._handle = handle
        kv_dir = tmp_path / f"kv{int(tiered)}"
        kv_dir.mkdir()
        a, b, c, _ = _histories(model)
        try:
            if tiered:
                # find one state's size, then allow memory just over one of them
                probe = Engine(handle, kv_cache_bytes=1 << 30)
                model.engine = probe
                _generate(model, a)
                _generate(model, b)
                one = probe.stats()["kv_bytes"]
                probe.close()
                model.engine = Engine(
                    handle,
                    kv_cache_bytes=one + one // 2,
                    kv_dir=str(kv_dir),
                    kv_disk_bytes=1 << 30,
                )
            else:
                model.engine = Engine(handle, kv_cache_bytes=0)
            _generate(model, a)
            _generate(model, b)  # a saved in memory
            _generate(model, c)  # b saved in memory, a moves to disk
            if tiered:
                st = model.engine.stats()
                assert st["kv_entries"] == 1
                assert st["kv_disk_entries"] == 1
                assert st["kv_spilled"] == 1
                assert len(_files(kv_dir)) == 1
            tail = handle.tokenize(" and more", add_special=False)
            req, buf = _generate(model, a + tail, max_tokens=12)
            outputs.append(buf.tokens())
            if tiered:
                st = model.engine.stats()
                assert st["kv_disk_restored"] == 1
                assert req.n_cached == len(a)  # its history (the reply differs)
            else:  # only what the slot's last session (c) shares with a
                assert req.n_cached == _common(a, c) < len(a) // 2
            model.engine.close()
        finally:
            handle.close()
    assert outputs[0] == outputs[1]


def test_the_disk_tier_stays_within_its_bound(tiny_gguf: Path, tmp_path: Path) -> None:
    from openheim.models._llama.bindings import LlamaHandle
    from openheim.models._llama.engine import Engine

    handle = LlamaHandle(
        str(tiny_gguf), n_ctx=1024, n_batch=512, n_seq_max=1, n_threads=1, n_gpu_layers=0
    )
    model: Any = type("M", (), {})()
    model._handle = handle
    try:
        model.engine = Engine(handle, kv_cache_bytes=1 << 30)
        hs = _histories(model)
        _generate(model, hs[0])
        _generate(model, hs[1])
        one = model.engine.stats()["kv_bytes"]
        model.engine.close()
        # no memory tier, disk room for two states: the oldest file is dropped
        model.engine = Engine(
            handle, kv_cache_bytes=0, kv_dir=str(tmp_path), kv_disk_bytes=2 * one + one // 2
        )
        for h in hs:
            _generate(model, h)
        st = model.engine.stats()
        assert st["kv_spilled"] == 3
        assert st["kv_disk_entries"] == 2
        assert len(_files(tmp_path)) == 2
        assert st["kv_disk_bytes"] <= 2 * one + one // 2
        # the first session's state was dropped: it is read again from scratch
        req, _ = _generate(model, hs[0] + handle.tokenize(" again", add_special=False))
        assert req.n_cached == _common(hs[0], hs[3]) < len(hs[0]) // 2
        model.engine.close()
        assert _files(tmp_path) == []
    finally:
        handle.close()


def test_a_missing_kv_dir_is_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    from openheim.models.llama import LlamaModel

    with pytest.raises(ConfigError, match="not a directory"):
        LlamaModel(str(tiny_gguf), n_ctx=256, n_parallel=1, kv_cache_dir=tmp_path / "nope")


def test_offload_settings_reach_llama_cpp(tiny_gguf: Path) -> None:
    """What a GPU box sets is what llama.cpp is given (a CPU build ignores the layers)."""
    from openheim.models._llama.bindings import capture_log
    from openheim.models.llama import LlamaModel

    with capture_log() as log:
        model = LlamaModel(
            str(tiny_gguf),
            n_ctx=512,
            n_parallel=2,
            n_threads=1,
            n_gpu_layers=-1,
            main_gpu=0,
            offload_kqv=False,
            flash_attn="off",
            n_ubatch=64,
        )
    try:
        h = model._handle
        assert h.model_params.n_gpu_layers == -1
        assert h.model_params.main_gpu == 0
        assert h.context_params.offload_kqv is False
        assert h.context_params.flash_attn_type == 0
        text = "".join(log)
        # llama.cpp's own report of the context it made
        assert "flash_attn            = disabled" in text
        assert "n_ubatch              = 64" in text
        assert "n_seq_max             = 2" in text
        req, buf = _generate(model, h.tokenize("still decodes"))
        assert req.n_generated == 8
        assert len(buf.tokens()) == 8
    finally:
        model.close()
    with capture_log() as log:
        model = LlamaModel(str(tiny_gguf), n_ctx=512, n_parallel=1, n_threads=1, flash_attn="on")
    model.close()
    assert "flash_attn            = enabled" in "".join(log)


def test_physical_batch_default_follows_the_device_and_parallelism(tiny_gguf: Path) -> None:
    """On a CPU, more than 32 parallel sequences decode in physical batches of 32."""
    from openheim.models.llama import LlamaModel

    for n_parallel, n_gpu_layers, want in ((33, 0, 32), (32, 0, 512), (64, -1, 512)):
        model = LlamaModel(
            str(tiny_gguf),
            n_ctx=1024,
            n_parallel=n_parallel,
            n_threads=1,
            n_gpu_layers=n_gpu_layers,
        )
        try:
            assert model._handle.context_params.n_ubatch == want
        finally:
            model.close()
    model = LlamaModel(str(tiny_gguf), n_ctx=1024, n_parallel=64, n_threads=1, n_ubatch=128)
    try:
        assert model._handle.context_params.n_ubatch == 128  # given: kept
    finally:
        model.close()


def test_bad_offload_settings_are_refused(tiny_gguf: Path) -> None:
    from openheim.models.llama import LlamaModel

    with pytest.raises(ConfigError, match="flash_attn must be one of"):
        LlamaModel(str(tiny_gguf), n_ctx=256, flash_attn="yes")
    with pytest.raises(ConfigError, match="main_gpu"):
        LlamaModel(str(tiny_gguf), n_ctx=256, main_gpu=-2)


def test_offload_settings_flow_from_the_config(tiny_gguf: Path, tmp_path: Path) -> None:
    """model_settings of a llama: agent in openheim.toml reach llama.cpp."""
    from openheim.config import load_config

    path = tmp_path / "openheim.toml"
    path.write_text(
        f'[agents.a]\nmodel = "llama:{tiny_gguf}"\n'
        "model_settings = { n_ctx = 256, n_parallel = 1, n_threads = 1, n_gpu_layers = -1, "
        'main_gpu = 0, offload_kqv = false, flash_attn = "off", kv_cache_mb = 8 }\n'
    )
    agent = load_config(path).build_agent("a")
    model: Any = agent.model
    try:
        assert model._handle.model_params.n_gpu_layers == -1
        assert model._handle.context_params.offload_kqv is False
        assert model._handle.context_params.flash_attn_type == 0
    finally:
        model.close()
