"""A tiny random-weight llama GGUF, written in milliseconds, for tests without downloads.

``write_tiny_gguf(path)`` writes a ~600 KB llama-architecture model that
llama.cpp (and so llama-cpp-python and its OpenAI-compatible server) loads,
tokenizes with, applies a chat template for, and generates from. Its text is
gibberish (the weights are random) but every code path of a real model runs:
SentencePiece tokenization with byte fallback, a chat template, BOS/EOS,
sampling, grammars.

The vocabulary: ``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens ``<0xNN>``
(typed BYTE so any text tokenizes), then printable pieces (characters, ``▁``
word starts, a few common words) up to ``vocab`` entries. Two transformer
blocks, embedding 64, 4 heads, FFN 128, f32 weights drawn from ``seed``.

Needs the ``gguf`` and ``numpy`` packages (the ``local`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CHAT_TEMPLATE", "write_tiny_gguf"]

# A ChatML-like template; tolerant of assistant turns whose content is null.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "hello",
    "world",
    "sunny",
    "rain",
    "cloud",
    "paris",
    "london",
    "weather",
    "city",
    "answer",
    "yes",
]

# SentencePiece token types, as llama.cpp reads them.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def _vocab(size: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [_UNKNOWN, _CONTROL, _CONTROL] + [_BYTE] * 256
    pieces: list[str] = ["▁"]
    chars = [chr(c) for c in range(33, 127)]
    pieces += chars
    pieces += ["▁" + c for c in chars if c.isalnum()]
    pieces += ["▁" + w for w in _WORDS]
    pieces += _WORDS
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    pieces += [a + b for a in letters for b in letters]
    seen = set(tokens)
    for piece in pieces:
        if len(tokens) >= size:
            break
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(_NORMAL)
    if len(tokens) < size:
        raise ValueError(f"vocab must be at most {len(tokens)} for this generator, got {size}")
    # Longer pieces score higher, so the tokenizer prefers them when merging.
    scores = [0.0] * 259 + [float(len(t)) - i * 1e-4 for i, t in enumerate(tokens[259:])]
    return tokens, scores, types


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    vocab: int = 512,
    seed: int = 0,
    n_embd: int = 64,
    n_head: int = 4,
    n_layer: int = 2,
    n_ff: int = 128,
    context_length: int = 2048,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write the model to ``path`` and return it as a Path.

    ``vocab`` counts every token (at least 259: three specials and 256 bytes).
    The same arguments always give the same bytes.
    """
    try:
        import gguf
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "write_tiny_gguf needs the gguf package, from the 'local' extra: "
            "pip install 'openheim[local]'",
            name="gguf",
        ) from exc
    import numpy as np

    if vocab < 300:
        raise ValueError(f"vocab must be at least 300, got {vocab}")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    tokens, scores, types = _vocab(vocab)
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.02) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> npt.NDArray[np.float32]:
        return np.ones(n, dtype=np.float32)

    out = Path(path)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("openheim-tiny")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    # numpy shapes are (out, in); gguf stores them reversed, as ggml expects.
    writer.add_tensor("token_embd.weight", weight(vocab, n_embd, scale=1.0))
    writer.add_tensor("output_norm.weight", ones(n_embd))
    writer.add_tensor("output.weight", weight(vocab, n_embd, scale=0.5))
    for i in range(n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", ones(n_embd))
        writer.add_tensor(p + "attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "attn_k.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "attn_v.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "ffn_norm.weight", ones(n_embd))
        writer.add_tensor(p + "ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", weight(n_embd, n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
