"""Load: a second process drives ``openheim serve`` with many concurrent sessions.

``python soak/soak_load.py URL KEY SESSIONS SECONDS`` (the generator) runs SESSIONS
sessions at once, each sending turns one after another for SECONDS, and prints
a JSON summary. Each answer must be ``echo: <prompt> (turn N)`` with N the
session's own turn count: a lost or doubled turn in the session's history shows
as a wrong N. Each session is deleted at the end (so memory can return).

:func:`run_load` starts the server (the ``latent`` ScriptedModel agent, 50 ms),
runs the generator in a subprocess and samples the server's RSS before, during
(peak) and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class _Conn:
    """One keep-alive HTTP/1.1 connection per session (a plain asyncio client: httpx's
    pool costs more CPU per request than the server does, and would measure itself)."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port, self.key = host, port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length) if length else b""
        return status, json.loads(payload) if payload else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _session(
    conn: _Conn, sid: str, deadline: list[float], stats: dict[str, Any], start: asyncio.Event
) -> None:
    await start.wait()
    turn = 0
    try:
        while time.monotonic() < deadline[0]:
            turn += 1
            prompt = f"{sid} turn {turn}"
            status, body = await conn.request(
                "POST", "/v1/agents/latent/runs", {"input": prompt, "session": sid}
            )
            if status != 200:
                stats["errors"] += 1
                stats["samples"].append(f"{sid}: HTTP {status} {str(body)[:200]}")
                return
            expected = f"echo: {prompt} (turn {turn})"
            if body.get("output") != expected:
                stats["mismatches"] += 1
                stats["samples"].append(f"{sid}: got {body.get('output')!r}, want {expected!r}")
                return
            stats["turns"] += 1
        status, body = await conn.request("GET", f"/v1/sessions/{sid}")
        messages = body["messages"] if status == 200 else []
        if len(messages) != 2 * turn:
            stats["mismatches"] += 1
            stats["samples"].append(f"{sid}: {len(messages)} messages stored for {turn} turns")
        status, _ = await conn.request("DELETE", f"/v1/sessions/{sid}")
        if status not in (200, 204):
            stats["errors"] += 1
    except Exception as exc:
        stats["errors"] += 1
        stats["samples"].append(f"{sid}: {type(exc).__name__}: {exc}")
        return
    finally:
        conn.close()
    stats["sessions_done"] += 1


async def generate(url: str, key: str, sessions: int, seconds: float) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats: dict[str, Any] = {
        "sessions": sessions,
        "sessions_done": 0,
        "turns": 0,
        "errors": 0,
        "mismatches": 0,
        "samples": [],
    }
    start = asyncio.Event()
    deadline = [0.0]  # set once every session is waiting on `start`
    tasks = [
        asyncio.ensure_future(_session(_Conn(host, port, key), f"s{i}", deadline, stats, start))
        for i in range(sessions)
    ]
    await asyncio.sleep(0)
    t0 = time.monotonic()
    deadline[0] = t0 + seconds
    start.set()
    await asyncio.gather(*tasks)
    stats["elapsed"] = time.monotonic() - t0
    stats["samples"] = stats["samples"][:10]
    stats["turns_per_s"] = stats["turns"] / max(stats["elapsed"], 1e-9)
    return stats


def main(argv: list[str]) -> None:
    url, key, sessions, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    stats = asyncio.run(generate(url, key, sessions, seconds))
    print(json.dumps(stats))


def run_load(sessions: int, seconds: float, work: Path | None = None) -> dict[str, Any]:
    """Serve the latent agent, drive it from a second process, and measure the server's RSS."""
    sys.path.insert(0, str(HERE))
    from soaklib import KEYS, rss_mb, start_server, stop_server, write_project

    work = work or Path(tempfile.mkdtemp(prefix="openheim-soak-load-"))
    config = write_project(work / "load", "memory://", max_runs=sessions + 64)
    # Finished runs stay readable (GET /v1/runs/{id}) for run_retention seconds (300 by
    # default): 1 s here, so "after" measures what is left once they are due to go.
    text = config.read_text().replace(
        "shutdown_grace = 5\n", "shutdown_grace = 5\nrun_retention = 1\n"
    )
    config.write_text(text)
    served = start_server(config)
    try:
        pid = served.proc.pid
        cold = rss_mb(pid)
        # Warm-up: a round as long as the measured one, at the same concurrency, so imports,
        # caches, pools and the allocator's arenas reach the round's working set before the
        # baseline; "after" then shows what the measured round left behind (Python rarely
        # hands freed arenas back to the OS: after a 5 s warm-up the baseline sat ~22 MiB
        # below a 60 s round's high-water mark, and three 40 s rounds in a row then left
        # 138, 138, 136 MiB: a plateau, not a leak).
        warm = _drive(served.url, KEYS["acme"], sessions, seconds)
        time.sleep(3.0)
        before = rss_mb(pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = _cpu_seconds(pid)
        stats = _drive(served.url, KEYS["acme"], sessions, seconds)
        cpu = _cpu_seconds(pid) - cpu0
        done.set()
        sampler.join()
        # Let the server finish what it frees lazily, then read "after" (best of a few).
        after = rss_mb(pid)
        for _ in range(10):
            time.sleep(0.5)
            after = min(after, rss_mb(pid))
        with served.client() as c:
            left = c.get("/v1/sessions").json().get("sessions", [])
        stats.update(
            rss_cold_mb=round(cold, 1),
            rss_before_mb=round(before, 1),
            rss_peak_mb=round(peak[0], 1),
            rss_after_mb=round(after, 1),
            sessions_left=len(left),
            warmup_errors=warm["errors"] + warm["mismatches"],
            server_alive=served.alive(),
            server_cpu_ms_per_turn=round(1000 * cpu / max(stats["turns"], 1), 2),
        )
        return stats
    finally:
        stop_server(served)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(url: str, key: str, sessions: int, seconds: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "soak_load.py"), url, key, str(sessions), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def returned_to_baseline(stats: dict[str, Any]) -> bool:
    """RSS after the long round is within max(16 MiB, 10%) of the warmed-up baseline."""
    before, after = stats["rss_before_mb"], stats["rss_after_mb"]
    return bool(after <= before + max(16.0, 0.10 * before))


if __name__ == "__main__":
    main(sys.argv[1:])
