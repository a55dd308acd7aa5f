"""Load, CI scale: a second process drives `openheim serve` with 100 concurrent sessions
for 3 s (the soak runs 2,000 for 60 s). Every turn answered and in order, every session
deleted, the server's RSS back near its baseline."""

from __future__ import annotations

from pathlib import Path

from soak_load import returned_to_baseline, run_load


def test_concurrent_sessions_lose_nothing_and_memory_returns(tmp_path: Path) -> None:
    stats = run_load(sessions=100, seconds=3.0, work=tmp_path)
    assert stats["errors"] == 0, stats["samples"]
    assert stats["mismatches"] == 0, stats["samples"]  # no lost or doubled turn
    assert stats["warmup_errors"] == 0
    assert stats["sessions_done"] == 100
    assert stats["turns"] >= 100  # every session got at least one turn through
    assert stats["sessions_left"] == 0
    assert stats["server_alive"]
    assert stats["rss_peak_mb"] >= stats["rss_before_mb"]
    assert returned_to_baseline(stats), stats
