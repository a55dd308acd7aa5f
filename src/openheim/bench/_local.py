"""``openheim bench local``: openheim's own llama.cpp engine at each concurrency.

The model is loaded once, with as many sequence slots as the largest
concurrency, and every request goes straight to its native decode loop
(``Engine.submit``), the path every agent on a ``llama:`` model takes below
the prompt template. Each request generates exactly ``max_tokens`` tokens
(end of generation ignored) at temperature 0, so every level does the same
work. Peak memory is this process's peak resident set during the level
(Linux resets it per level; elsewhere it is the peak so far).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openheim.bench._load import (
    Level,
    Timing,
    add_level_figures,
    prompt_text,
)
from openheim.bench._report import Progress, Report, peak_rss_mb
from openheim.errors import ConfigError

__all__ = ["device", "run_local"]


def device(n_gpu_layers: int, threads: int) -> str:
    """What the run uses: GPU offload, or the CPU, its threads and features."""
    import llama_cpp as lc

    info = lc.llama_print_system_info().decode(errors="replace")
    if n_gpu_layers != 0 and bool(lc.llama_supports_gpu_offload()):
        return f"GPU ({n_gpu_layers} layers offloaded)"
    feats = [
        p.split("=")[0].split(":")[-1].strip() for p in info.split("|") if p.strip().endswith("= 1")
    ]
    return f"CPU, {threads} threads ({' '.join(feats[:6])})".replace(" ()", "")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to clear_refs); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


async def _one(model: Any, tokens: list[int], max_tokens: int) -> Timing:
    from openheim._core import TokenBuffer
    from openheim.models._llama.engine import GenRequest

    buf = TokenBuffer()
    req = GenRequest(tokens, buffer=buf, max_tokens=max_tokens, ignore_eos=True)
    timing = Timing()
    t0 = last = time.perf_counter()
    seen = 0
    try:
        model.engine.submit(req)
        async for _chunk in buf.reader():
            now = time.perf_counter()
            n = buf.n_tokens
            if timing.ttft is None:
                timing.ttft = now - t0
                # Tokens that arrive with the first one reach the reader together.
                timing.gaps.extend([0.0] * (n - 1))
            elif n > seen:
                # A chunk may carry several tokens (a character split over
                # tokens): its gap is shared among them.
                timing.gaps.extend([(now - last) / (n - seen)] * (n - seen))
            seen, last = n, now
    except Exception as exc:
        timing.error = f"{type(exc).__name__}: {exc}"
    timing.tokens = buf.n_tokens
    return timing


async def _level(
    model: Any, prompts: list[list[int]], concurrency: int, rounds: int, max_tokens: int
) -> tuple[float, list[Timing]]:
    timings: list[Timing] = []
    counter = iter(range(concurrency * rounds))

    async def client() -> None:
        for i in counter:
            timings.append(await _one(model, prompts[i % len(prompts)], max_tokens))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - t0, timings


def run_local(
    model_path: str,
    levels: list[int],
    *,
    max_tokens: int,
    rounds: int,
    prompts: list[Any],
    n_gpu_layers: int = 0,
    threads: int | None = None,
    n_ctx: int | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> Report:
    from openheim.models.llama import LlamaModel

    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--model {model_path}: no GGUF file there")
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads is None and load > cores:
        # llama.cpp's threads spin while they wait for each other: on a busy machine
        # one of them waiting for a core stalls every step.
        print(
            f"warning: the machine is busy (load average {load:.1f} on {cores} cores); "
            f"llama.cpp's {cores} threads will wait for each other and the figures will be "
            "low: --threads 1 may measure better",
            file=sys.stderr,
        )
    threads = threads or cores
    slots = max(levels)
    rendered = [prompt_text(p) for p in prompts]
    # A token holds at least one byte of text (byte fallback), so the
    # prompt's bytes bound its tokens: room for each slot without a second load.
    longest = max(len(p.encode()) for p in rendered) + 4
    per_seq = longest + max_tokens + 8
    ctx = n_ctx or per_seq * slots
    model = LlamaModel(
        str(path),
        n_ctx=ctx,
        n_parallel=slots,
        n_threads=threads,
        n_gpu_layers=n_gpu_layers,
        kv_cache_mb=0,
    )
    report = Report(
        "local",
        {
            "model": str(path),
            "model_bytes": path.stat().st_size,
            "concurrency": levels,
            "max_tokens": max_tokens,
            "rounds": rounds,
            "prompts": len(prompts),
            "n_ctx": ctx,
            "n_parallel": slots,
            "threads": threads,
            "n_gpu_layers": n_gpu_layers,
            "ignore_eos": True,
            "temperature": 0.0,
        },
    )
    report.machine["device"] = device(n_gpu_layers, threads)
    bar = progress(len(levels) + 1) if progress else None
    try:
        tokenized = [model._handle.tokenize(p) for p in rendered]
        asyncio.run(_level(model, tokenized, 1, 1, min(4, max_tokens)))  # warm-up
        if bar:
            bar.step("warm-up")
        for c in levels:
            resettable = _reset_peak()
            wall, timings = asyncio.run(_level(model, tokenized, c, rounds, max_tokens))
            level = Level(
                c,
                wall,
                timings,
                peak_rss_mb(),
                "this process" + ("" if resettable else " (peak so far)"),
            )
            add_level_figures(report, level)
            if bar:
                bar.step(f"concurrency {c}")
    finally:
        if bar:
            bar.close()
        model.close()
    return report
