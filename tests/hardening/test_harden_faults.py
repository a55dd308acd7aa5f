"""Faults, CI scale: SIGKILL of `openheim serve` mid-run, dropped PostgreSQL connections,
a model endpoint that fails in every way, a full disk under SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import soak_faults


def test_sigkill_of_the_server_loses_and_repeats_no_committed_step(tmp_path: Path) -> None:
    res = soak_faults.server_kills(trials=3, runs_per_trial=2, work=tmp_path)
    assert res["tried"] == 3
    assert res["problems"] == []
    assert res["lost"] == res["duplicated"] == res["committed_rerun"] == 0
    assert res["runs"] == 6
    assert res["bad"] == 0


@pytest.mark.postgres
def test_dropped_postgres_connections_lose_nothing() -> None:
    res = soak_faults.pg_drops(runs=12, interval=0.3)
    assert res["tried"] > 0, "no connection was terminated"
    assert res["done"] == res["runs"], res["samples"]
    assert res["lost"] == res["duplicated"] == 0


def test_failing_model_endpoint_retries_or_fails_cleanly_with_consistent_sessions() -> None:
    res = soak_faults.model_faults(n=28)
    assert res["problems"] == []
    outcomes = res["outcomes"]
    assert outcomes.get("500-then-ok: answered", 0) > 0  # retried
    assert outcomes.get("reset-then-ok: answered", 0) > 0
    assert not any("UNDOCUMENTED" in k for k in outcomes), outcomes
    assert any(k.startswith("timeout: ModelTimeout") for k in outcomes), outcomes
    assert res["bad"] == 0


def test_full_disk_under_sqlite_is_a_clear_error_and_no_damage() -> None:
    # Trial 0: RLIMIT_FSIZE; trial 1: a 384 KB tmpfs when this user may mount one.
    res = soak_faults.full_disk(limit_bytes=192 * 1024, trials=2)
    assert res["problems"] == []
    assert len(res["errors"]) == 2, "the disk never filled"
    assert all("StorageError" in e for e in res["errors"])


async def test_sigkill_of_batch_workers_loses_and_repeats_no_committed_step(
    tmp_path: Path,
) -> None:
    import batch_faults

    for kind in ("redis", "nats"):  # private servers on free ports
        res = await batch_faults.worker_kills(kind, 3, tmp_path, runs_per_trial=3)
        assert res["problems"] == [], kind
        assert res["tried"] == 3
        assert res["runs"] == res["done"] == 9
        assert res["bad"] == 0
        assert res["survived"] == 3


async def test_a_queue_server_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    import batch_faults

    for kind in ("redis", "nats"):
        res = await batch_faults.server_restarts(kind, 1, tmp_path, runs=4)
        assert res["problems"] == [], kind
        assert res["workers_alive"], kind
        assert res["runs"] == res["done"] == 4
        assert res["bad"] == 0
