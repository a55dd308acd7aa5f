"""bench_tokbuf on pytest-benchmark: TokenBuffer against the pure-Python buffer.

200,000 tokens a round (the script uses 1M), CPU time with the collector off,
as the script measures it; the ratio is per token.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_tokbuf import (
    PyTokenBuffer,
    append_many,
    append_then_read,
    interleaved,
    make_pieces,
    no_gc,
)

from openheim._core import TokenBuffer

N = 100_000


@functools.cache
def pieces() -> list[bytes]:
    return make_pieces(N)


def _per_token(fn: Any) -> Any:
    # The script's helpers return µs per token (CPU time, collector off).
    return lambda: no_gc(fn)() / 1e6


BASE = "pure-Python buffer"
PAIRS = [
    Pair(
        "tokbuf_append_then_read",
        "append 100k tokens, then read",
        _per_token(lambda: append_then_read(TokenBuffer, pieces())),
        _per_token(lambda: append_then_read(PyTokenBuffer, pieces())),
        BASE,
        units=N,
        unit="token",
        target=3.0,
    ),
    Pair(
        "tokbuf_interleaved",
        "append, read every 16 tokens",
        _per_token(lambda: interleaved(TokenBuffer, pieces())),
        _per_token(lambda: interleaved(PyTokenBuffer, pieces())),
        BASE,
        units=N,
        unit="token",
        target=3.0,
    ),
    Pair(
        "tokbuf_append_many",
        "append_many ×64 + read (baseline: its append loop)",
        _per_token(lambda: append_many(pieces())),
        _per_token(lambda: append_then_read(PyTokenBuffer, pieces())),
        BASE,
        units=N,
        unit="token",
        target=3.0,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_tokbuf(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
