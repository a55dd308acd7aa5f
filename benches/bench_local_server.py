"""N concurrent streaming clients on one local model, served two ways.

openheim's OpenAI-compatible endpoint (``openheim serve``, an agent on
``llama:<demo model>``: continuous batching) against ``python -m
llama_cpp.server`` on the same GGUF with the same thread count (one sequence at
a time), given the very prompt text openheim renders for this base model
through its ``/v1/completions``. Each client streams one chat completion of at most 64 tokens at
temperature 0 with the same prompts; we time until every stream has ended and
record the time to the first streamed content. llama_cpp.server runs with
``--interrupt_requests False`` (by default a new request cuts the stream in
progress).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _util import Row
from bench_local import THREADS, model_path
from bench_server import _free_port, _stop, _wait_up

CLIENTS = int(os.environ.get("BENCH_LOCAL_CLIENTS", "8"))
MAX_TOKENS = 64
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "List some facts about the moon.",
    "Describe a busy market in the morning.",
]
KEY = "sk-bench"


async def _one(client: httpx.AsyncClient, url: str, model: str, i: int) -> tuple[float, int]:
    body: dict[str, object] = {
        "model": model,
        "stream": True,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    if url.endswith("/chat/completions"):
        body["messages"] = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
    else:  # the same prompt text openheim renders for this base model (plain template)
        body["prompt"] = f"User: {PROMPTS[i % len(PROMPTS)]}\nAssistant:"
    t0 = time.perf_counter()
    first = 0.0
    chars = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            delta = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if delta and not first:
                first = time.perf_counter() - t0
            chars += len(delta)
    return first, chars


async def _clients(url: str, model: str) -> tuple[float, float, int]:
    async with httpx.AsyncClient(timeout=600) as client:
        await _one(client, url, model, 0)  # warm-up: model pages, prompt cache of the template
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, model, i) for i in range(CLIENTS)))
        wall = time.perf_counter() - t0
    return wall, statistics.median(r[0] for r in results), sum(r[1] for r in results)


def _measure(
    cmd: list[str],
    health: str,
    route: str,
    model: str,
    folder: Path,
    log: str,
    env: dict[str, str],
) -> tuple[float, float, int]:
    """Start one server on a free loopback port, run the clients against it, stop it."""
    port = _free_port()
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / log, "wb"),  # noqa: SIM115 (the child owns it)
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}{health}", proc)
        return asyncio.run(_clients(f"http://127.0.0.1:{port}{route}", model))
    except Exception:
        print((folder / log).read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        _stop(proc)


def run() -> list[Row]:
    path = model_path()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "openheim.toml").write_text(
            f'[agents.local]\nmodel = "llama:{path}"\n'
            f"model_settings = {{ max_tokens = {MAX_TOKENS}, temperature = 0.0 }}\n"
            '[store]\nurl = "memory://"\n'
            '[[server.api_keys]]\ntenant = "bench"\nkey_env = "BENCH_KEY"\n'
        )
        env = {**os.environ, "BENCH_KEY": KEY, "OMP_NUM_THREADS": str(THREADS)}
        serve = [
            sys.executable,
            "-m",
            "openheim",
            "serve",
            "--config",
            str(folder / "openheim.toml"),
        ]
        o_wall, o_ttft, o_chars = _measure(
            serve, "/healthz", "/v1/chat/completions", "local", folder, "oh.log", env
        )
        llama_server = [
            sys.executable, "-m", "llama_cpp.server", "--model", path,
            "--n_threads", str(THREADS), "--n_ctx", "4096", "--interrupt_requests", "False",
        ]  # fmt: skip
        b_wall, b_ttft, b_chars = _measure(
            llama_server, "/v1/models", "/v1/completions", "gemma", folder, "lc.log", env
        )
    print(
        f"openheim: {o_wall:.2f}s ttft {o_ttft:.2f}s {o_chars} chars; llama_cpp.server: {b_wall:.2f}s ttft {b_ttft:.2f}s {b_chars} chars",
        file=sys.stderr,
    )
    rows.append(
        Row(
            f"{CLIENTS} streaming clients, all done (≤{MAX_TOKENS} tok)",
            o_wall,
            b_wall,
            "s",
            "llama_cpp.server, same GGUF",
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            "  median time to first content",
            o_ttft,
            b_ttft,
            "s",
            "llama_cpp.server, same GGUF",
            higher_is_better=False,
        )
    )
    rows.append(
        Row("  characters streamed in total", o_chars, b_chars, "ch", "llama_cpp.server, same GGUF")
    )
    return rows


if __name__ == "__main__":
    from _util import print_table

    print_table("N streaming clients on one local model", run())
