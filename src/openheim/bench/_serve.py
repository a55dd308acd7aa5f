"""``openheim bench serve``: any OpenAI-compatible server, from a load generator process.

The server is measured as a client sees it: each request streams
(``stream: true``), so the time to the first token and the gaps between
tokens are those on the wire. Works against openheim's own ``openheim
serve`` (the model name is an agent's name), llama.cpp's server, vLLM and
others. Peak memory is known only for a server on this machine (``--pid``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openheim.bench._load import Level, Timing, add_level_figures
from openheim.bench._report import Progress, Report
from openheim.errors import ConfigError

__all__ = ["run_serve"]


def _rss_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_serve(
    url: str,
    model: str,
    levels: list[int],
    *,
    max_tokens: int,
    rounds: int,
    prompts: list[Any],
    api_key_env: str | None = None,
    pid: int | None = None,
    timeout: float = 600.0,
    extra_body: dict[str, Any] | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> Report:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {url!r}: give the API's base URL, e.g. http://127.0.0.1:8000/v1")
    url = url.rstrip("/")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set")
    if pid is not None and _rss_peak_mb(pid) is None:
        raise ConfigError(f"--pid {pid}: no such process on this machine (or not readable)")
    report = Report(
        "serve",
        {
            "url": url,
            "model": model,
            "concurrency": levels,
            "max_tokens": max_tokens,
            "rounds": rounds,
            "prompts": len(prompts),
            "stream": True,
            "temperature": 0.0,
            "server_pid": pid,
            "extra_body": extra_body or {},
        },
    )
    report.machine["device"] = f"server at {url} (client on this machine)"
    cfg = {
        "url": url,
        "model": model,
        "levels": levels,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "prompts": prompts,
        "api_key": api_key,
        "timeout": timeout,
        "extra_body": extra_body or {},
    }
    bar = progress(len(levels)) if progress else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "openheim.bench._loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(cfg))
        proc.stdin.close()
        for c in levels:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                raise ConfigError(f"the load generator stopped: {err.strip()[-500:]}")
            data = json.loads(line)
            timings = [
                Timing(r.get("ttft"), r.get("gaps", []), r.get("tokens", 0), r.get("error"))
                for r in data["requests"]
            ]
            failed = [t.error for t in timings if t.error]
            if failed and len(failed) == len(timings):
                raise ConfigError(
                    f"every request to {url}/chat/completions failed at concurrency {c}: "
                    f"{failed[0]}"
                )
            if not failed and not any(t.tokens for t in timings):
                print(
                    f"warning: concurrency {c}: the server streamed no tokens (every reply "
                    "ended at once); a fair run makes every reply max_tokens long, e.g. "
                    """--extra-body '{"ignore_eos": true}' (vLLM, llama.cpp's llama-server)""",
                    file=sys.stderr,
                )
            level = Level(
                c,
                data["wall"],
                timings,
                _rss_peak_mb(pid) if pid is not None else None,
                f"server pid {pid} (peak so far)",
            )
            add_level_figures(report, level)
            if bar:
                bar.step(f"concurrency {c}")
        proc.wait(timeout=30)
    finally:
        if bar:
            bar.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return report
