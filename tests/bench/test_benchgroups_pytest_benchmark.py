"""The pytest-benchmark plumbing of benches/: both sides saved, the ratio table, --bench-check.

A planted pair (each side reports its own seconds per unit, as the scripts'
helpers do: 2 ms for openheim, 0.5 ms for the baseline; target 2×) and its
mirror image run through a copy of ``benches/conftest.py`` and ``benches/_pb.py`` in a
pytest subprocess, as ``make bench`` runs them. Slow on a loaded machine
(two pytest start-ups: ~60 s at load 12 on 2 cores, a few seconds idle).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parents[2] / "benches"

PLANTED = """
import time
from typing import Any

import pytest
from _pb import Pair, params, run_side


def slow() -> float:
    time.sleep(0.002)
    return 0.002


def fast() -> float:
    return 0.0005


PAIRS = [
    Pair("planted_slow", "planted: openheim's side sleeps", slow, fast, "no sleep",
         unit="op", target=2.0, rounds=3),
    Pair("planted_fast", "planted: the baseline's side sleeps", fast, slow, "a sleep",
         units=1, unit="op", target=2.0, rounds=3),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_planted(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
"""


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "benches"
    folder.mkdir()
    for name in ("conftest.py", "_pb.py"):
        shutil.copy(BENCHES / name, folder / name)
    (folder / "test_pb_planted.py").write_text(PLANTED)
    return folder


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-p",
            "no:cacheprovider",
            "-q",
            "--benchmark-only",
            *args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sides_saved_ratio_table_and_bench_check(bench_dir: Path) -> None:
    out_json = bench_dir / "run.json"
    done = _pytest(bench_dir, f"--benchmark-json={out_json}", "--bench-check")
    # Every test passed; the session fails only because a ratio is below its target.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    saved = json.loads(out_json.read_text())
    names = sorted(b["name"] for b in saved["benchmarks"])
    assert names == [
        "test_planted[planted_fast-baseline]",
        "test_planted[planted_fast-openheim]",
        "test_planted[planted_slow-baseline]",
        "test_planted[planted_slow-openheim]",
    ]
    by_name = {b["name"]: b for b in saved["benchmarks"]}
    slow = by_name["test_planted[planted_slow-openheim]"]
    assert slow["group"] == "planted_slow"
    assert slow["extra_info"]["side"] == "openheim"
    assert slow["extra_info"]["target_ratio"] == 2.0
    assert slow["extra_info"]["own_seconds_per_unit"] == pytest.approx(0.002)
    lines = done.stdout.splitlines()
    (row,) = [line for line in lines if line.startswith("planted_slow ")]
    assert "BELOW TARGET" in row
    (row,) = [line for line in lines if line.startswith("planted_fast ")]
    assert row.endswith(" ok")
    assert "below target: planted_slow:" in done.stdout

    met = _pytest(bench_dir, "--bench-check", "-k", "planted_fast")
    assert met.returncode == 0, met.stdout + met.stderr
