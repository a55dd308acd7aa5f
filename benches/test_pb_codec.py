"""bench_codec on pytest-benchmark: framed encode/decode against bare msgspec, and durable
appends (grouped fsyncs) against one ``write`` + ``fdatasync`` per record.

Codec: 500 calls a round on a 50-message conversation. Log: 1,000 asyncio
tasks × 5 appends (and 64 threads × 20) a round against 50 records appended
and synced one by one, each on a fresh file; the ratio is per record.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import shutil
import tempfile
import time
from typing import Any

import msgspec
import pytest
from _pb import Pair, params, run_side
from bench_codec import (
    ConversationState,
    _async_log,
    _python_fsync_per_record,
    _threaded_log,
    conversation,
)

from openheim._core import decode_frame, encode_frame

LOOPS = 500


@functools.cache
def data() -> dict[str, Any]:
    state = conversation()
    return {
        "state": state,
        "dict": msgspec.to_builtins(state),
        "body": msgspec.msgpack.encode(state),
        "frame": encode_frame(state),
    }


def _calls(fn: Any, key: str) -> Any:
    def side() -> float:
        arg = data()[key]
        t0 = time.perf_counter()
        for _ in range(LOOPS):
            fn(arg)
        return (time.perf_counter() - t0) / LOOPS

    return side


_struct_decoder = msgspec.msgpack.Decoder(ConversationState).decode

_tmp = tempfile.mkdtemp(prefix="oh-pb-codec-")
atexit.register(shutil.rmtree, _tmp, True)
_files = itertools.count()


def _fresh() -> str:
    return os.path.join(_tmp, f"log{next(_files)}")


def _appends(rate: Any) -> Any:
    def side() -> float:
        path = _fresh()
        try:
            return 1.0 / rate(path)  # the script returns records/s
        finally:
            os.unlink(path)

    return side


BASE_LOG = "Python write+fdatasync per record"
PAIRS = [
    Pair(
        "codec_encode_struct",
        "encode a 50-message Struct state",
        _calls(encode_frame, "state"),
        _calls(msgspec.msgpack.encode, "state"),
        "msgspec encode",
        units=LOOPS,
        unit="call",
        target=0.67,
    ),
    Pair(
        "codec_encode_dict",
        "encode a 50-message dict state",
        _calls(encode_frame, "dict"),
        _calls(msgspec.msgpack.encode, "dict"),
        "msgspec encode",
        units=LOOPS,
        unit="call",
        target=0.67,
    ),
    Pair(
        "codec_decode_struct",
        "decode a 50-message Struct state",
        _calls(lambda f: decode_frame(f, type=ConversationState), "frame"),
        _calls(_struct_decoder, "body"),
        "msgspec decode",
        units=LOOPS,
        unit="call",
        target=0.67,
    ),
    Pair(
        "codec_decode_dict",
        "decode a 50-message dict state",
        _calls(decode_frame, "frame"),
        _calls(msgspec.msgpack.decode, "body"),
        "msgspec decode",
        units=LOOPS,
        unit="call",
        target=0.67,
    ),
    Pair(
        "log_appends_asyncio",
        "durable appends, 1000 asyncio tasks",
        _appends(lambda p: _async_log(p, 1000, 5)),
        _appends(lambda p: _python_fsync_per_record(p, 50)),
        BASE_LOG,
        units=5000,
        unit="record",
    ),
    Pair(
        "log_appends_threads",
        "durable appends, 64 threads",
        _appends(lambda p: _threaded_log(p, 64, 20)),
        _appends(lambda p: _python_fsync_per_record(p, 50)),
        BASE_LOG,
        units=64 * 20,
        unit="record",
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_codec(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
