"""Run every fuzz target for N executions and print one line per target.

    python fuzz/fuzz_run.py --runs 1000000            # atheris (libFuzzer) when installed
    python fuzz/fuzz_run.py --runs 2000 --engine hypothesis

Targets: the core's frame and log decoders (tests/core/fuzz_codec.py), the
stores' records (fuzz_records.py), the SSE parser (fuzz_sse.py) and the config
loader (fuzz_config.py). A target passes when it ran every execution without a
crash, an unexpected exception or a failed property; atheris writes a crashing
input as ``crash-*`` into ``--artifacts``.

atheris needs a CPython it ships wheels for (3.8-3.11 on Linux x86_64 at the time
of writing; newer ones build from source with clang + libFuzzer). Without it the
same ``check`` functions run under hypothesis (``--engine hypothesis``), which is
what the CI test does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = {
    "frames+log (core)": ROOT / "tests" / "core" / "fuzz_codec.py",
    "store records": HERE / "fuzz_records.py",
    "SSE parser": HERE / "fuzz_sse.py",
    "config loader": HERE / "fuzz_config.py",
}


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def run_atheris(path: Path, runs: int, artifacts: Path, max_time: int | None) -> dict[str, Any]:
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(path),
        f"-runs={runs}",
        "-max_len=4096",
        "-timeout=60",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
    ]
    if max_time:
        cmd.append(f"-max_total_time={max_time}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=(max_time or 86400) + 600)
    elapsed = time.monotonic() - t0
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    execs = int(m.group(1)) if m else 0
    crash = proc.returncode != 0
    return {
        "engine": "atheris",
        "execs": execs,
        "seconds": round(elapsed, 1),
        "crashes": int(crash),
        "detail": proc.stderr[-3000:] if crash else "",
    }


def run_hypothesis(path: Path, runs: int) -> dict[str, Any]:
    """The target's ``check`` under hypothesis (binary inputs), in a child process."""
    code = f"""
import importlib.util, json, sys, time
from hypothesis import HealthCheck, given, settings, strategies as st
spec = importlib.util.spec_from_file_location("target", {str(path)!r})
if {path.name!r} == "fuzz_codec.py":
    import types
    atheris = types.ModuleType("atheris")
    atheris.instrument_imports = lambda: __import__("contextlib").nullcontext()
    atheris.instrument_func = lambda f: f
    class FDP:
        def __init__(self, data): self.data = data
        def ConsumeIntInRange(self, lo, hi):
            v = self.data[0] if self.data else 0; self.data = self.data[1:]; return lo + v % (hi - lo + 1)
        def ConsumeBytes(self, n): v = self.data[:n]; self.data = self.data[n:]; return v
        def remaining_bytes(self): return len(self.data)
    atheris.FuzzedDataProvider = FDP
    sys.modules["atheris"] = atheris
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
check = getattr(mod, "check", None) or mod.TestOneInput
n = [0]
@settings(max_examples={runs}, deadline=None, database=None, derandomize=False,
          suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2048))
def fuzz(data):
    n[0] += 1
    check(data)
t0 = time.monotonic()
fuzz()
print(json.dumps({{"execs": n[0], "seconds": round(time.monotonic() - t0, 1)}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=86400
    )
    if proc.returncode != 0:
        return {
            "engine": "hypothesis",
            "execs": 0,
            "seconds": 0,
            "crashes": 1,
            "detail": proc.stderr[-3000:],
        }
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"engine": "hypothesis", **out, "crashes": 0, "detail": ""}


def run_all(
    runs: int,
    engine: str = "auto",
    artifacts: Path | None = None,
    max_time: int | None = None,
    only: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    use = engine if engine != "auto" else ("atheris" if have_atheris() else "hypothesis")
    artifacts = artifacts or Path(os.environ.get("TMPDIR", "/tmp")) / "openheim-fuzz-artifacts"
    results = {}
    for name, path in TARGETS.items():
        if only and not any(o in name for o in only):
            continue
        if use == "atheris":
            results[name] = run_atheris(path, runs, artifacts, max_time)
        else:
            results[name] = run_hypothesis(path, runs)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    ap.add_argument("--max-time", type=int, default=None, help="seconds per target (atheris)")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    results = run_all(args.runs, args.engine, max_time=args.max_time, only=args.only)
    bad = 0
    for name, r in results.items():
        print(
            f"{name:20} {r['engine']:10} {r['execs']:>10,} execs {r['seconds']:>8}s crashes {r['crashes']}"
        )
        if r["crashes"]:
            print(r["detail"])
            bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
