"""pytest-benchmark for the micro-benchmarks: ``make bench`` / ``make bench-compare``.

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

# case key -> side ("openheim" / "peer") -> seconds per unit
_RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def side_by_side() -> dict[str, dict[str, Any]]:
    return _RESULTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
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
