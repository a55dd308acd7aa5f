"""Constrained decoding from a JSON schema that costs almost nothing per token.

llama.cpp's grammar sampler masks the whole vocabulary at every step, which on
a 262k-token vocabulary is an order of magnitude slower than free decoding.
Most of the time the model already wants a token the grammar allows, so the
native decode loop (``src/_core/lengine.c``) samples freely first and asks the
grammar about that ONE token; only when it is refused does it mask candidates
with the grammar (the best 64 logits when they decide the result, then the
best 1,024 and 16,384, else the whole vocabulary) and sample again. The result is exactly what full masking
would allow, at about the price of free decoding.

Constrained replies use only tokens whose bytes are whole UTF-8 characters, so
they always decode cleanly and string lengths count characters.

This module turns a JSON schema into the GBNF grammar the loop is given.
"""

from __future__ import annotations

import functools
import json
from typing import Any

__all__ = ["schema_to_gbnf"]


@functools.lru_cache(maxsize=256)
def _gbnf_cached(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = str(json_schema_to_gbnf(schema_json, prop_order=["tool", "arguments", "answer"]))
    # JSON strings may not hold raw control characters; the converter's rule allows them.
    return gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF grammar accepting exactly the JSON documents valid under ``schema``."""
    return _gbnf_cached(json.dumps(schema, sort_keys=True))
