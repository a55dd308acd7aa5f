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


async def _session(
    client: Any, sid: str, deadline: list[float], stats: dict[str, Any], start: asyncio.Event
) -> None:
    await start.wait()
    turn = 0
    while time.monotonic() < deadline[0]:
        turn += 1
        prompt = f"{sid} turn {turn}"
        try:
            r = await client.post("/v1/agents/latent/runs", json={"input": prompt, "session": sid})
        except Exception as exc:
            stats["errors"] += 1
            stats["samples"].append(f"{sid}: {type(exc).__name__}: {exc}")
            return
        if r.status_code != 200:
            stats["errors"] += 1
            stats["samples"].append(f"{sid}: HTTP {r.status_code} {r.text[:200]}")
            return
        expected = f"echo: {prompt} (turn {turn})"
        if r.json().get("output") != expected:
            stats["mismatches"] += 1
            stats["samples"].append(f"{sid}: got {r.json().get('output')!r}, want {expected!r}")
            return
        stats["turns"] += 1
    try:
        got = await client.get(f"/v1/sessions/{sid}")
        messages = got.json()["messages"] if got.status_code == 200 else []
        if len(messages) != 2 * turn:
            stats["mismatches"] += 1
            stats["samples"].append(f"{sid}: {len(messages)} messages stored for {turn} turns")
        if (await client.delete(f"/v1/sessions/{sid}")).status_code not in (200, 204):
            stats["errors"] += 1
    except Exception as exc:
        stats["errors"] += 1
        stats["samples"].append(f"{sid} (check): {type(exc).__name__}: {exc}")
    stats["sessions_done"] += 1


async def generate(url: str, key: str, sessions: int, seconds: float) -> dict[str, Any]:
    import httpx

    stats: dict[str, Any] = {
        "sessions": sessions,
        "sessions_done": 0,
        "turns": 0,
        "errors": 0,
        "mismatches": 0,
        "samples": [],
    }
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        limits=limits,
        timeout=httpx.Timeout(300, connect=60, pool=300),
    ) as client:
        start = asyncio.Event()
        deadline = [0.0]  # set once every session is waiting on `start`
        tasks = [
            asyncio.ensure_future(_session(client, f"s{i}", deadline, stats, start))
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
    served = start_server(write_project(work / "load", "memory://", max_runs=sessions + 64))
    try:
        pid = served.proc.pid
        # Warm-up: a short round so imports, caches and pools exist before the baseline.
        warm = _drive(served.url, KEYS["acme"], min(sessions, 50), 1.0)
        time.sleep(1.0)
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
    """RSS after is within 25% of the growth (and 16 MiB) of the baseline."""
    before, peak, after = stats["rss_before_mb"], stats["rss_peak_mb"], stats["rss_after_mb"]
    return bool(after <= before + max(16.0, 0.25 * (peak - before)))


if __name__ == "__main__":
    main(sys.argv[1:])
