"""pytest-benchmark for the micro-benchmarks: ``make bench`` / ``make bench-compare``.

Two tables at the end: the overhead cases (``test_pb_cases.py``) and the pairs
of the ``bench_*.py`` scripts (``test_pb_<script>.py``, see ``_pb.py``), each
with openheim's figure, the baseline's and the ratio beside its target.
``--bench-check`` makes the session fail when a ratio is below its target.

Each case of :mod:`openheim.bench.cases` runs twice, openheim and its peer
(the same builders ``openheim bench overhead`` uses), in the same session;
the table at the end prints both medians per unit of work and the ratio
(peer / openheim), beside the case's target. Peers that are not installed
are skipped and named (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _util for the scripts

import _pb

# case key -> side ("openheim" / "peer") -> seconds per unit
_RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def side_by_side() -> dict[str, dict[str, Any]]:
    return _RESULTS


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--bench-check",
        action="store_true",
        help="fail the session when a side-by-side ratio is below its stated target",
    )


def _below_target() -> list[str]:
    from openheim.bench.cases import CASES

    missed = []
    for case in CASES:
        got = _RESULTS.get(case.key, {})
        ours, peer = got.get("openheim"), got.get("peer")
        if ours and peer and case.target and peer / ours < case.target:
            missed.append(f"{case.key}: {peer / ours:.2f}× < {case.target:g}×")
    for key, got in _pb.RESULTS.items():
        pair, ours, base = got["pair"], got.get("openheim"), got.get("baseline")
        if ours and base and pair.target and base / ours < pair.target:
            missed.append(f"{key}: {base / ours:.2f}× < {pair.target:g}×")
    return missed


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if session.config.getoption("--bench-check") and exitstatus == 0 and _below_target():
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    _pairs_summary(terminalreporter)
    missed = _below_target()
    if missed:
        terminalreporter.write_line("")
        terminalreporter.write_line("below target: " + "; ".join(missed))
    if not _RESULTS:
        return
    from openheim.bench.cases import CASES

    write = terminalreporter.write_line
    write("")
    write("== side by side (median µs per unit; ratio = peer / openheim, higher is better)")
    write(f"{'case':<20} {'openheim':>12} {'peer':>12} {'ratio':>8}  {'target':<7} peer")
    for case in CASES:
        got = _RESULTS.get(case.key, {})
        ours, peer = got.get("openheim"), got.get("peer")
        if ours is None:
            continue
        ratio = f"{peer / ours:.2f}×" if peer else "-"
        target = f"≥{case.target:g}×" if case.target else ""
        verdict = ""
        if peer and case.target:
            verdict = "ok" if peer / ours >= case.target else "BELOW TARGET"
        peer_text = f"{peer * 1e6:12.3f}" if peer else f"{'-':>12}"
        name = case.peer_name if peer else f"{case.peer_name} (not installed)"
        write(
            f"{case.key:<20} {ours * 1e6:12.3f} {peer_text} {ratio:>8}  {target:<7} "
            f"{name} {verdict}".rstrip()
        )


def _pairs_summary(terminalreporter: Any) -> None:
    if not _pb.RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(
        "== bench_* pairs side by side (per unit, each side's own timing; "
        "ratio = baseline / openheim, higher is better)"
    )
    write(f"{'pair':<34} {'openheim':>11} {'baseline':>11} {'ratio':>8}  {'target':<7} baseline")
    for key, got in _pb.RESULTS.items():
        pair, ours, base = got["pair"], got.get("openheim"), got.get("baseline")
        if ours is None:
            continue
        ratio = f"{base / ours:.2f}×" if base else "-"
        target = f"≥{pair.target:g}×" if pair.target else ""
        verdict = ""
        if base and pair.target:
            verdict = "ok" if base / ours >= pair.target else "BELOW TARGET"
        base_text = _pb.fmt_time(base) if base else "-"
        name = pair.base_name if base else f"{pair.base_name} (not run)"
        write(
            f"{key:<34} {_pb.fmt_time(ours):>11} {base_text:>11} {ratio:>8}  {target:<7} "
            f"{name} /{pair.unit} {verdict}".rstrip()
        )
