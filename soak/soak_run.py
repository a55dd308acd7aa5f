"""`make soak`: load, faults and hostile input against a real `openheim serve`; one table.

    python soak/soak_run.py                 # the full soak (2,000 sessions x 60 s, 200 kills, 1M fuzz execs)
    python soak/soak_run.py --quick         # minutes, the same code paths
    python soak/soak_run.py --sessions 500 --seconds 20 --kills 50 --fuzz-runs 100000

Rows: load held (sessions, turns, RSS before / peak / after), faults survived
(SIGKILL of the server, dropped PostgreSQL connections, a failing model
endpoint, a full disk), bad inputs tried (oversized, nested, invalid UTF-8,
tool-argument injection, path traversal, cross-tenant, schemathesis, fuzzing).
The last column counts what was lost, duplicated or got through: all must be 0.

Batch mode: ``soak/batch_faults.py`` (``rows(scale)``: SIGKILLed ``openheim worker``
processes on a private Redis and a private NATS, restarts of each server mid-run)
adds its rows; ``--batch-scale`` scales it (1.0: 100 + 40 kills, 4 + 4 restarts).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from soaklib import Row, table  # noqa: E402


def _guard(area: str, what: str, fn: Callable[[], list[Row]]) -> list[Row]:
    t0 = time.monotonic()
    print(f"[soak] {area}: {what} ...", file=sys.stderr, flush=True)
    try:
        rows = fn()
        print(f"[soak] {area}: {what} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        return rows
    except Exception as exc:
        traceback.print_exc()
        return [Row(area, what, 1, 0, 1, f"harness failed: {type(exc).__name__}: {exc}"[:120])]


def load_rows(sessions: int, seconds: float, work: Path) -> list[Row]:
    from soak_load import returned_to_baseline, run_load

    s = run_load(sessions, seconds, work)
    bad = s["errors"] + s["mismatches"] + s["warmup_errors"] + s["sessions_left"]
    base = returned_to_baseline(s)
    note = (
        f"{s['turns']:,} turns, {s['turns_per_s']:.0f}/s, {s['errors']} errors; RSS MiB: cold "
        f"{s['rss_cold_mb']:.0f}, warmed {s['rss_before_mb']:.0f}, peak {s['rss_peak_mb']:.0f}, "
        f"after {s['rss_after_mb']:.0f}" + ("" if base else " (NOT back to baseline)")
    )
    if s["samples"]:
        note += f"; e.g. {s['samples'][0][:80]}"
    held = s["sessions_done"] if (base and s["server_alive"]) else 0
    return [Row("load", f"{sessions:,} sessions x {seconds:g} s", sessions, held, bad, note)]


def fault_rows(
    kills: int, pg_runs: int, model_runs: int, disk_trials: int, work: Path
) -> list[Row]:
    import soak_faults as faults

    rows = []

    def kill() -> list[Row]:
        k = faults.server_kills(kills, work=work)
        note = (
            f"{k['runs']} runs, {k['steps']} steps; {k['kills_mid_run']} kills mid-run; "
            f"side effects repeated in flight: {k['effects_repeated_in_flight']}"
        )
        if k["problems"]:
            note += f"; {k['problems'][0][:60]}"
        return [Row("faults", "SIGKILL serve (SQLite)", k["tried"], k["survived"], k["bad"], note)]

    def pg() -> list[Row]:
        p = faults.pg_drops(pg_runs)
        note = (
            f"{p['runs']} runs, {p['done']} done; {p['run_errors_surfaced']} errors surfaced, "
            f"{p['resumes']} resumes"
        )
        if p["samples"]:
            note += f"; e.g. {p['samples'][0][:70]}"
        ok = p["tried"] if p["bad"] == 0 and p["done"] == p["runs"] else 0
        return [Row("faults", "pg_terminate_backend", p["tried"], ok, p["bad"], note)]

    def model() -> list[Row]:
        m = faults.model_faults(model_runs)
        kinds = sorted({k.split(": ")[1] for k in m["outcomes"] if "answered" not in k})
        note = "clean failures: " + ", ".join(kinds)
        if m["problems"]:
            note = f"{m['problems'][0][:100]}"
        return [
            Row("faults", "model 500/timeout/cut stream", m["tried"], m["survived"], m["bad"], note)
        ]

    def disk() -> list[Row]:
        d = faults.full_disk(trials=disk_trials)
        note = (
            d["problems"][0][:100]
            if d["problems"]
            else (d["errors"][0][:100] if d["errors"] else "")
        )
        return [Row("faults", "full disk (SQLite)", d["tried"], d["survived"], d["bad"], note)]

    rows += _guard("faults", "SIGKILL serve (SQLite)", kill)
    rows += _guard("faults", "pg_terminate_backend", pg)
    rows += _guard("faults", "model 500/timeout/cut stream", model)
    rows += _guard("faults", "full disk (SQLite)", disk)
    return rows


def batch_rows(scale: float) -> list[Row]:
    hook = HERE / "batch_faults.py"
    if not hook.exists():
        return [
            Row(
                "faults",
                "batch worker kills, Redis/NATS restarts",
                0,
                0,
                0,
                "not measured here: issue 13's hook (soak/batch_faults.py)",
            )
        ]
    spec = importlib.util.spec_from_file_location("batch_faults", hook)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows: list[Row] = mod.rows(scale)
    return rows


def hostile_rows(scale: int, examples: int, work: Path) -> list[Row]:
    import soak_hostile as hostile

    res = hostile.run_all(scale, examples, work)
    rows = []
    for name, r in res.items():
        note = r.get("skipped") or (r["samples"][0][:100] if r.get("samples") else "")
        if name == "schemathesis" and r.get("returncode"):
            note = r["tail"][-100:].replace("\n", " ")
        rows.append(Row("hostile", name, r["tried"], r["tried"] - r["through"], r["through"], note))
    return rows


def fuzz_rows(runs: int, engine: str) -> list[Row]:
    spec = importlib.util.spec_from_file_location("fuzz_runner", ROOT / "fuzz" / "fuzz_run.py")
    assert spec is not None
    assert spec.loader is not None
    fuzz_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz_run)
    rows = []
    for name, r in fuzz_run.run_all(runs, engine).items():
        note = f"{r['engine']}, {r['seconds']:.0f} s" + (
            f"; {r['detail'][-80:]}" if r["crashes"] else ""
        )
        rows.append(
            Row("fuzz", name, r["execs"], r["execs"] if not r["crashes"] else 0, r["crashes"], note)
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="openheim soak")
    ap.add_argument("--quick", action="store_true", help="a few minutes at small scale")
    ap.add_argument("--sessions", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--kills", type=int)
    ap.add_argument("--pg-runs", type=int)
    ap.add_argument("--model-runs", type=int)
    ap.add_argument("--fuzz-runs", type=int)
    ap.add_argument("--fuzz-engine", default="auto")
    ap.add_argument("--examples", type=int, help="schemathesis examples per operation")
    ap.add_argument(
        "--batch-scale", type=float, help="batch faults: 1.0 = 100 + 40 worker kills (full)"
    )
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["load", "faults", "batch", "hostile", "fuzz"]
    )
    a = ap.parse_args(argv)
    q = a.quick
    sessions = a.sessions or (200 if q else 2000)
    seconds = a.seconds or (5.0 if q else 60.0)
    kills = a.kills or (10 if q else 200)
    pg_runs = a.pg_runs or (20 if q else 100)
    model_runs = a.model_runs or (35 if q else 700)
    fuzz_runs = a.fuzz_runs or (5_000 if q else 1_000_000)
    examples = a.examples or (10 if q else 200)
    work = Path(tempfile.mkdtemp(prefix="openheim-soak-"))
    rows: list[Row] = []
    t0 = time.monotonic()
    if "load" not in a.skip:
        rows += _guard("load", f"{sessions} sessions", lambda: load_rows(sessions, seconds, work))
    if "faults" not in a.skip:
        rows += fault_rows(kills, pg_runs, model_runs, 4, work)
    if "batch" not in a.skip:
        scale = a.batch_scale or (0.1 if q else 1.0)
        rows += _guard("faults", "batch mode", lambda: batch_rows(scale))
    if "hostile" not in a.skip:
        rows += _guard("hostile", "http", lambda: hostile_rows(1 if q else 3, examples, work))
    if "fuzz" not in a.skip:
        rows += _guard("fuzz", "targets", lambda: fuzz_rows(fuzz_runs, a.fuzz_engine))
    title = f"openheim soak ({'quick' if q else 'full'}; {time.monotonic() - t0:.0f} s; work dir {work})"
    print(table(rows, title))
    kills = [r for r in rows if r.what.startswith("SIGKILL")]
    print(
        f"SIGKILL trials (server and batch workers): {sum(r.tried for r in kills):,}, "
        f"lost or duplicated committed steps: {sum(r.bad for r in kills)}"
    )
    return 0 if all(r.ok or r.tried == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
