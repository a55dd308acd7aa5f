"""The HTTP server under load from a second process, against fair baselines.

1. The same model on both servers: ``/v1/chat/completions`` on an openheim
   agent whose model is the tiny generated GGUF (``llama:``), against
   llama-cpp-python's server (``python -m llama_cpp.server``) on the same
   GGUF, the same context size, both with one llama.cpp thread, both asked
   for the same fixed ``max_tokens`` (``BENCH_SERVER_MAX_TOKENS``, default 8).
   Neither server's chat endpoint takes ``ignore_eos``; the tiny model's
   random weights make it generate up to the limit on both, and the load
   generator counts the completion tokens of every reply on both sides
   (``usage``) so the table shows the work was equal (a warning if not;
   llama_cpp.server's chat endpoint counts one more than max_tokens when it
   stops at the limit, e.g. 9 for 8, finish_reason "length"). N concurrent clients (a raw keep-alive HTTP/1.1 load
   generator in its own process): requests/s, p50, p99.
2. Pure framework overhead, no inference on either side: a ScriptedModel
   agent behind ``openheim serve``, against a bare Starlette app on the same
   uvicorn (same event loop and HTTP parser) that answers every request with
   a fixed chat completion: what the agent loop, routing, auth and accounting
   cost per request.
3. Many concurrent SSE agent-run streams held open: the server's resident
   memory at the start and at the end of the hold (flat means no growth while
   streams idle), and per stream.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from _util import Row

CLIENTS = int(os.environ.get("BENCH_SERVER_CLIENTS", "32"))
DURATION = float(os.environ.get("BENCH_SERVER_SECONDS", "4"))
STREAMS = int(os.environ.get("BENCH_SERVER_STREAMS", "1000"))
HOLD = float(os.environ.get("BENCH_SERVER_HOLD", "30"))
MAX_TOKENS = int(os.environ.get("BENCH_SERVER_MAX_TOKENS", "8"))
N_CTX = 2048  # the same on both servers
KEY = "sk-bench"

TOOLS = """
import asyncio
from openheim.models import ScriptedModel

def _answer(request):
    return "ok"

async def _hold(request):
    await asyncio.sleep(float(request.messages[-1].content or "1"))
    return "held"

def fast():
    return ScriptedModel(_answer, name="fast")

def hold():
    return ScriptedModel(_hold, name="hold")
"""

CONFIG = f"""
[agents.fast]
model = "benchtools:fast"

[agents.tiny]
model = "llama:tiny.gguf"
model_settings = {{ n_threads = 1, n_ctx = {N_CTX} }}

[agents.hold]
model = "benchtools:hold"

[store]
url = "memory://"

[server]
max_concurrent_runs_per_tenant = {STREAMS * 2}
max_body_bytes = 65536

[[server.api_keys]]
tenant = "bench"
key_env = "BENCH_KEY"
"""

# The load generator: runs in its own process so the client's work does not share
# the server's CPU time slice accounting (it still shares the machine's 2 cores).
LOADGEN = textwrap.dedent(
    """
    # A raw asyncio HTTP/1.1 keep-alive client: httpx's own per-request cost would
    # otherwise dominate the measurement on a 2-core machine.
    import asyncio, json, sys, time
    from urllib.parse import urlsplit

    url, model, clients, duration, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    max_tokens = int(sys.argv[6])
    parts = urlsplit(url)
    body = json.dumps({
        "model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
    }).encode()
    request = (
        f"POST {parts.path} HTTP/1.1\\r\\nHost: {parts.netloc}\\r\\nAuthorization: Bearer {key}\\r\\n"
        f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n"
    ).encode() + body

    async def call(reader, writer):
        writer.write(request)
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\\r\\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        payload = await reader.readexactly(length)
        return status, payload

    async def worker(stop, lat, errors, tokens):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        await call(reader, writer)  # warm-up
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status, payload = await call(reader, writer)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(1)
                continue
            usage = json.loads(payload).get("usage") or {}
            tokens.append((usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
        writer.close()

    async def main():
        lat, errors, tokens = [], [], []
        t0 = time.perf_counter()
        stop = t0 + duration
        await asyncio.gather(*(worker(stop, lat, errors, tokens) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        lat.sort()
        n = max(1, len(tokens))
        print(json.dumps({
            "rps": len(lat) / elapsed,
            "p50": lat[len(lat) // 2] * 1000,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "errors": len(errors),
            "prompt_tokens": sum(p for p, _ in tokens) / n,
            "completion_tokens": sum(c for _, c in tokens) / n,
            "min_completion_tokens": min((c for _, c in tokens), default=0),
        }))

    asyncio.run(main())
    """
)

STREAMER = textwrap.dedent(
    """
    import asyncio, sys
    import httpx

    url, n, hold, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    async def one(client, opened):
        async with client.stream("POST", url, json={"input": hold, "stream": True}) as r:
            opened.append(r.status_code)
            async for line in r.aiter_lines():
                if line.startswith("event: done"):
                    return True
        return False

    async def main():
        limits = httpx.Limits(max_connections=n + 10)
        headers = {"Authorization": "Bearer " + key}
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=120) as client:
            opened = []
            tasks = [asyncio.create_task(one(client, opened)) for _ in range(n)]
            while len(opened) < n:
                await asyncio.sleep(0.05)
            print("opened", sum(1 for s in opened if s == 200), flush=True)
            done = await asyncio.gather(*tasks)
            print("done", sum(done), flush=True)

    asyncio.run(main())
    """
)


# The no-inference baseline: the same uvicorn, a Starlette route, a fixed answer.
BARE = textwrap.dedent(
    """
    import json, sys, time
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    ANSWER = {
        "id": "chatcmpl-bare", "object": "chat.completion", "created": 0, "model": "bare",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

    async def chat(request):
        body = json.loads(await request.body())
        answer = dict(ANSWER, created=int(time.time()), model=body.get("model", "bare"))
        return Response(json.dumps(answer), media_type="application/json")

    async def health(request):
        return Response("ok")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/healthz", health)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:  # 503 while loading
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _load(url: str, model: str, folder: Path) -> dict[str, float]:
    script = folder / "loadgen.py"
    script.write_text(LOADGEN)
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            url,
            model,
            str(CLIENTS),
            str(DURATION),
            KEY,
            str(MAX_TOKENS),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _bare(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    (folder / "bare.py").write_text(BARE)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(folder / "bare.py"), str(port)], stderr=subprocess.DEVNULL
    )
    _wait_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def _openheim(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    write_tiny_gguf(folder / "tiny.gguf")
    (folder / "benchtools.py").write_text(TOOLS)
    (folder / "openheim.toml").write_text(CONFIG)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openheim", "serve", "--port", str(port)],
        cwd=folder,
        env={**os.environ, "BENCH_KEY": KEY},
        stderr=subprocess.DEVNULL,
    )
    _wait_up(f"http://127.0.0.1:{port}/readyz", proc)  # every agent built, every model loaded
    return proc, port


def _llama(folder: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return None
    model = folder / "tiny.gguf"  # the GGUF the openheim side served
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "tiny",
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
            "--api_key",
            KEY,
            "--n_threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_up(f"http://127.0.0.1:{port}/v1/models", proc)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _streams(port: int, pid: int, folder: Path) -> tuple[int, int, int, int]:
    """(streams opened, RSS before, RSS at the start of the hold, RSS at its end) in KB."""
    script = folder / "streamer.py"
    script.write_text(STREAMER)
    before = _rss_kb(pid)
    url = f"http://127.0.0.1:{port}/v1/agents/hold/runs"
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(STREAMS), str(HOLD), KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    opened_line = proc.stdout.readline().split()
    opened = int(opened_line[1]) if len(opened_line) == 2 else 0
    start = _rss_kb(pid)
    time.sleep(max(0.0, HOLD - 2.0))
    end = _rss_kb(pid)
    rest, _ = proc.communicate(timeout=HOLD + 120)
    finished = int(rest.split()[1]) if rest.startswith("done") else 0
    if finished != opened:
        print(f"warning: only {finished} of {opened} SSE streams reached their done event")
    return opened, before, start, end


def _rows(
    label: str, ours: dict[str, float], base: dict[str, float], name: str, tokens: bool = False
) -> list[Row]:
    for who, figures in (("openheim", ours), (name, base)):
        if figures.get("errors"):
            print(f"warning: {who} answered {figures['errors']:g} requests with a non-200 status")
    rows = [
        Row(f"{label} req/s", ours["rps"], base["rps"], "r/s", name),
        Row(f"{label} p50", ours["p50"], base["p50"], "ms", name, False),
        Row(f"{label} p99", ours["p99"], base["p99"], "ms", name, False),
    ]
    if tokens:  # the work done per reply: the same on both sides, or the table says not
        o, b = ours.get("completion_tokens", 0.0), base.get("completion_tokens", 0.0)
        # llama_cpp.server's chat endpoint reports max_tokens + 1 completion tokens when it
        # stops at the limit (finish_reason "length"; its /v1/completions reports max_tokens):
        # a one-token difference is its count, not less work. b != b: baseline not run (nan).
        if b == b and abs(o - b) > 1.0 + 0.05 * max(o, b):
            print(
                f"warning: unequal work: openheim generated {o:.1f} tokens per reply, "
                f"{name} {b:.1f} (max_tokens={MAX_TOKENS} on both)"
            )
        rows.append(Row(f"{label} completion tokens/reply", o, b, "tok", name))
        rows.append(
            Row(
                f"{label} prompt tokens/reply",
                ours.get("prompt_tokens", 0.0),
                base.get("prompt_tokens", 0.0),
                "tok",
                name,
            )
        )
    return rows


def run() -> list[Row]:
    rows: list[Row] = []
    nan = dict.fromkeys(("rps", "p50", "p99", "completion_tokens", "prompt_tokens"), float("nan"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, port = _openheim(folder)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            ours_model = _load(url, "tiny", folder)
            ours_bare = _load(url, "fast", folder)
            opened, before, start, end = _streams(port, proc.pid, folder)
        finally:
            _stop(proc)
        llama = _llama(folder)
        if llama is not None:
            lproc, lport = llama
            try:
                base_model = _load(f"http://127.0.0.1:{lport}/v1/chat/completions", "tiny", folder)
            finally:
                _stop(lproc)
            model_name = "llama_cpp.server, same GGUF"
        else:
            base_model, model_name = nan, "llama_cpp.server (not installed)"
        bproc, bport = _bare(folder)
        try:
            base_bare = _load(f"http://127.0.0.1:{bport}/v1/chat/completions", "bare", folder)
        finally:
            _stop(bproc)
    rows += _rows(
        f"same model, max_tokens={MAX_TOKENS} ({CLIENTS} clients)",
        ours_model,
        base_model,
        model_name,
        tokens=True,
    )
    rows += _rows(
        f"no inference ({CLIENTS} clients)",
        ours_bare,
        base_bare,
        "bare Starlette on uvicorn, fixed answer",
    )
    per_stream = (start - before) / max(1, opened)
    rows.append(
        Row(
            f"{opened} SSE streams: RSS end/start of {HOLD:g}s hold",
            end / 1024,
            start / 1024,
            "MB",
            "RSS at hold start",
            higher_is_better=False,
            limit=start / 1024 * 1.05,
        )
    )
    rows.append(
        Row(
            "SSE stream: server memory per open stream",
            per_stream,
            per_stream,
            "KB",
            "(itself)",
            higher_is_better=False,
        )
    )
    return rows


if __name__ == "__main__":
    from _util import print_table

    print_table("server", run())
