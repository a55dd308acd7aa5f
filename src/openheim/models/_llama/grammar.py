"""Constrained decoding from a JSON schema that costs almost nothing per token.

llama.cpp's grammar sampler masks the whole vocabulary at every step, which on
a 262k-token vocabulary is an order of magnitude slower than free decoding.
Most of the time the model already wants a token the grammar allows, so we
sample freely first and ask the grammar about that ONE token; only when it is
rejected do we mask the full vocabulary and sample again. The result is
exactly what full masking would allow, at about the price of free decoding.

Constrained replies use only tokens whose bytes are whole UTF-8 characters, so
they always decode cleanly and string lengths count characters.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import numpy as np

from openheim.models._llama.bindings import TOKEN_DATA, LlamaHandle, token_data_array

__all__ = ["LazyGrammar", "schema_to_gbnf"]


@functools.lru_cache(maxsize=256)
def _gbnf_cached(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = str(json_schema_to_gbnf(schema_json, prop_order=["tool", "arguments", "answer"]))
    # JSON strings may not hold raw control characters; the converter's rule allows them.
    return gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF grammar accepting exactly the JSON documents valid under ``schema``."""
    return _gbnf_cached(json.dumps(schema, sort_keys=True))


class LazyGrammar:
    """A grammar sampler consulted for the sampled token only, unless it refuses."""

    def __init__(self, handle: LlamaHandle, gbnf: str) -> None:
        self._h = handle
        self._smpl = handle.make_grammar(gbnf)
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self._one_arr = token_data_array(self._one)
        self._full: Any = None
        self._whole = handle.complete_utf8()
        self.full_masks = 0  # how often the fast path was refused (for tests/benchmarks)
        self.checks = 0

    def allows(self, token: int) -> bool:
        self.checks += 1
        if not self._whole[token]:
            return False
        self._one["id"][0] = token
        self._one["logit"][0] = 0.0
        self._one_arr.size = 1
        self._one_arr.selected = -1
        self._h.apply(self._smpl, self._one_arr)
        return bool(math.isfinite(float(self._one["logit"][0])))

    def sample_masked(self, chain: Any, idx: int) -> int:
        """Mask the whole vocabulary with the grammar, then sample with ``chain``."""
        self.full_masks += 1
        h = self._h
        if self._full is None:
            self._full = np.zeros(h.n_vocab, dtype=TOKEN_DATA)
            self._ids = np.arange(h.n_vocab, dtype=np.int32)
        full = self._full
        full["id"] = self._ids  # samplers reorder the array in place
        full["logit"] = h.logits(idx)
        full["p"] = 0.0
        arr = token_data_array(full)
        h.apply(self._smpl, arr)
        full["logit"][~self._whole] = -np.inf  # no partial UTF-8 inside a constrained reply
        h.apply(chain, arr)
        if arr.selected < 0:
            # A greedy/dist chain always selects; guard against an empty mask anyway.
            best = int(np.argmax(full["logit"]))
            return int(full["id"][best])
        token = int(full["id"][arr.selected])
        h.accept(chain, token)
        return token

    def accept(self, token: int) -> None:
        self._h.accept(self._smpl, token)

    def close(self) -> None:
        if self._smpl:
            self._h.free_sampler(self._smpl)
            self._smpl = None
