"""bench_mailbox on pytest-benchmark: Mailbox against the standard library's queues.

Smaller batches than the script (200k messages in one loop, 50k across
threads, 5k through ``run_in_executor``), each side timed as the script does;
the ratio is per message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_mailbox import (
    MAXSIZE,
    _loop_pair,
    _thread_to_loop_call_soon,
    _thread_to_loop_mailbox,
    _thread_to_loop_queue,
    _tt_mailbox,
    _tt_queue,
)

from openheim import Mailbox

LOOP_N = 200_000
THREAD_N = 50_000
EXECUTOR_N = 5_000


def _per_msg(rate: Any) -> Any:
    return lambda: 1.0 / rate()  # the script returns messages/s


PAIRS = [
    Pair(
        "mailbox_loop",
        "one loop: await put / get",
        _per_msg(lambda: _loop_pair(lambda: Mailbox(MAXSIZE), LOOP_N)),
        _per_msg(lambda: _loop_pair(lambda: asyncio.Queue(MAXSIZE), LOOP_N)),
        "asyncio.Queue(1024)",
        units=LOOP_N,
        unit="msg",
        target=3.0,
    ),
    Pair(
        "mailbox_loop_get_many",
        "one loop: await put / get + get_many",
        _per_msg(lambda: _loop_pair(lambda: Mailbox(MAXSIZE), LOOP_N, batched=True)),
        _per_msg(lambda: _loop_pair(lambda: asyncio.Queue(MAXSIZE), LOOP_N)),
        "asyncio.Queue(1024)",
        units=LOOP_N,
        unit="msg",
        target=3.0,
    ),
    Pair(
        "mailbox_threads_to_loop",
        "2 threads -> loop",
        _per_msg(lambda: _thread_to_loop_mailbox(THREAD_N)),
        _per_msg(lambda: _thread_to_loop_call_soon(THREAD_N)),
        "call_soon_threadsafe+asyncio.Queue",
        units=THREAD_N,
        unit="msg",
        target=5.0,
    ),
    Pair(
        "mailbox_threads_to_loop_executor",
        "2 threads -> loop",
        _per_msg(lambda: _thread_to_loop_mailbox(THREAD_N)),
        _per_msg(lambda: _thread_to_loop_queue(EXECUTOR_N)),
        "queue.Queue via run_in_executor",
        units=THREAD_N,
        unit="msg",
        target=5.0,
    ),
    Pair(
        "mailbox_thread_to_thread",
        "thread -> thread",
        _per_msg(lambda: _tt_mailbox(THREAD_N)),
        _per_msg(lambda: _tt_queue(THREAD_N)),
        "queue.Queue(1024)",
        units=THREAD_N,
        unit="msg",
        target=5.0,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_mailbox(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
