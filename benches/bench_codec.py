"""State codec and log: framed encode/decode against bare msgspec, grouped fsyncs against
one fsync per record.

(a) encode_frame / decode_frame of a 50-message conversation (msgspec Struct and plain
    dict forms) against msgspec.msgpack alone: the frame (header + CRC32C + one copy)
    should cost at most 1.5× (ratio ≥ 0.67).
(b) durable appends through LogWriter from many concurrent asyncio tasks and threads,
    against the plain-Python baseline of open/write/os.fdatasync per record; target
    ≥ 10,000 records/s. The single-append latency (one record + its fsync, sequential)
    is reported beside it.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from _util import Row, print_table

from openheim._core import LogWriter, decode_frame, encode_frame
from openheim.bench.cases import WORDS


@dataclass
class AbsRow(Row):
    """A row whose target is an absolute floor on `ours`, not a ratio."""

    floor: float | None = None

    def verdict(self) -> str:
        if self.floor is None:
            return ""
        return "ok" if self.ours >= self.floor else "BELOW TARGET"


# -- (a) codec ------------------------------------------------------------------------------


class ToolCall(msgspec.Struct):
    id: str
    name: str
    arguments: dict[str, Any]


class Message(msgspec.Struct):
    role: str
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ConversationState(msgspec.Struct):
    session: str
    agent: str
    turn: int
    messages: list[Message]
    metadata: dict[str, str]


def conversation(n: int = 50, seed: int = 7) -> ConversationState:
    rnd = random.Random(seed)
    messages: list[Message] = [Message("system", "You are a helpful assistant. " * 4)]
    for i in range(1, n):
        text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 140)))[:800]
        if i % 7 == 3:
            calls = [
                ToolCall(f"call_{i}_{k}", "get_weather", {"city": "Paris", "days": k + 1})
                for k in range(rnd.randint(1, 2))
            ]
            messages.append(Message("assistant", text[:120], tool_calls=calls))
        elif i % 7 == 4:
            messages.append(Message("tool", text, tool_call_id=f"call_{i - 1}_0"))
        else:
            messages.append(Message("user" if i % 2 else "assistant", text))
    return ConversationState("user-42", "assistant", n, messages, {"model": "gpt-4o-mini"})


def _per_call(fn: Any, arg: Any, loops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(loops):
        fn(arg)
    return (time.perf_counter() - t0) / loops * 1e6  # µs


def _pair(ours: Any, base: Any, arg_ours: Any, arg_base: Any, loops: int) -> tuple[float, float]:
    o: list[float] = []
    b: list[float] = []
    for _ in range(9):  # interleaved so machine noise hits both alike
        o.append(_per_call(ours, arg_ours, loops))
        b.append(_per_call(base, arg_base, loops))
    return statistics.median(o), statistics.median(b)


def codec_rows(loops: int = 2000) -> list[Row]:
    state = conversation()
    as_dict = msgspec.to_builtins(state)
    body = msgspec.msgpack.encode(state)
    frame = encode_frame(state)
    struct_dec = msgspec.msgpack.Decoder(ConversationState).decode
    rows: list[Row] = []
    size = f"{len(body) / 1024:.0f} KiB"

    o, b = _pair(encode_frame, msgspec.msgpack.encode, state, state, loops)
    rows.append(
        Row(f"encode 50-msg Struct state ({size})", o, b, "µs", "msgspec encode", False, 0.67)
    )
    o, b = _pair(encode_frame, msgspec.msgpack.encode, as_dict, as_dict, loops)
    rows.append(Row("encode 50-msg dict state", o, b, "µs", "msgspec encode", False, 0.67))

    def ours_struct(f: bytes) -> Any:
        return decode_frame(f, type=ConversationState)

    o, b = _pair(ours_struct, struct_dec, frame, body, loops)
    rows.append(Row("decode 50-msg Struct state", o, b, "µs", "msgspec decode", False, 0.67))
    o, b = _pair(decode_frame, msgspec.msgpack.decode, frame, body, loops)
    rows.append(Row("decode 50-msg dict state", o, b, "µs", "msgspec decode", False, 0.67))
    return rows


# -- (b) durable appends -------------------------------------------------------------------

RECORD = b"x" * 200  # a small checkpoint delta


# The log makes appends durable with fdatasync (enough: it flushes the size
# change); the baseline uses the same call so the ratio is only about grouping.
_sync = getattr(os, "fdatasync", os.fsync)


def _python_fsync_per_record(path: str, n: int) -> float:
    """Records/s for the plain approach: append, then fdatasync, one record at a time."""
    t0 = time.perf_counter()
    with open(path, "ab", buffering=0) as f:
        for _ in range(n):
            f.write(RECORD)
            _sync(f.fileno())
    return n / (time.perf_counter() - t0)


def _sequential_log(path: str, n: int) -> float:
    with LogWriter(path) as w:
        t0 = time.perf_counter()
        for _ in range(n):
            w.append(RECORD)
        return n / (time.perf_counter() - t0)


def _async_log(path: str, tasks: int, per_task: int) -> float:
    async def producer(w: LogWriter) -> None:
        for _ in range(per_task):
            await w.append_async(RECORD)

    async def main() -> float:
        async with LogWriter(path) as w:
            t0 = time.perf_counter()
            await asyncio.gather(*(producer(w) for _ in range(tasks)))
            return tasks * per_task / (time.perf_counter() - t0)

    return asyncio.run(main())


def _threaded_log(path: str, threads: int, per_thread: int) -> float:
    with LogWriter(path) as w:
        start = threading.Barrier(threads + 1)

        def worker() -> None:
            start.wait()
            for _ in range(per_thread):
                w.append(RECORD)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        return threads * per_thread / (time.perf_counter() - t0)


def wal_rows(repeat: int = 5) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="oh-bench-") as tmp:
        counter = iter(range(10**6))

        def fresh() -> str:
            return os.path.join(tmp, f"log{next(counter)}")

        runs: dict[str, list[float]] = {"base": [], "seq": [], "async": [], "threads": []}
        for _ in range(repeat):  # interleaved so disk and CPU noise hit all alike
            runs["base"].append(_python_fsync_per_record(fresh(), 200))
            runs["seq"].append(_sequential_log(fresh(), 200))
            runs["async"].append(_async_log(fresh(), 1000, 20))
            runs["threads"].append(_threaded_log(fresh(), 64, 100))
    base_rate, seq_rate, async_rate, thread_rate = (
        statistics.median(runs[k]) for k in ("base", "seq", "async", "threads")
    )
    base_name = "Python write+fdatasync per record"
    return [
        AbsRow(
            "durable appends, 1000 asyncio tasks (≥10k/s)",
            async_rate,
            base_rate,
            "r/s",
            base_name,
            floor=10_000,
        ),
        AbsRow(
            "durable appends, 64 threads (≥10k/s)",
            thread_rate,
            base_rate,
            "r/s",
            base_name,
            floor=10_000,
        ),
        Row(
            "single append + fsync latency (sequential)",
            1e3 / seq_rate,
            1e3 / base_rate,
            "ms",
            base_name,
            False,
        ),
    ]


def run() -> list[Row]:
    return codec_rows() + wal_rows()


if __name__ == "__main__":
    print_table(
        "state codec + log (codec: lower is better, ratio = msgspec/openheim, target ≥0.67×; "
        "log: records/s, target ≥10k/s)",
        run(),
    )
