"""The tiny GGUF writer: deterministic bytes, and a model llama.cpp really runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from openheim.testing.tiny_gguf import write_tiny_gguf


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_arguments_same_bytes_and_seed_changes_them(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf")
    b = write_tiny_gguf(tmp_path / "b.gguf")
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=1)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert 300_000 < a.stat().st_size < 1_000_000


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab"):
        write_tiny_gguf(tmp_path / "x.gguf", vocab=100)
    with pytest.raises(ValueError, match="n_head"):
        write_tiny_gguf(tmp_path / "x.gguf", n_embd=30, n_head=4)


@pytest.mark.llama
def test_llama_cpp_loads_tokenizes_templates_and_generates(tmp_path: Path) -> None:
    import llama_cpp

    path = write_tiny_gguf(tmp_path / "tiny.gguf", vocab=400)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False, seed=3)
    try:
        assert llm.n_vocab() == 400
        text = "héllo wörld ☃ 🎉"
        tokens = llm.tokenize(text.encode(), add_bos=False)
        # Byte fallback: any text round-trips (after SentencePiece's leading space).
        assert llm.detokenize(tokens).decode().removeprefix(" ") == text
        out = llm.create_chat_completion(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
            max_tokens=8,
            temperature=0.0,
        )
        assert out["usage"]["prompt_tokens"] > 10  # the template wrapped the messages
        assert out["usage"]["completion_tokens"] > 0
    finally:
        llm.close()
