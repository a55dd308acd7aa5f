"""`openheim bench compare A.json B.json`: the change per figure; a planted regression flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bench


@pytest.fixture
def run_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "a.json"
    code, _, _ = bench(
        "overhead",
        "--repeat",
        "1",
        "--seconds",
        "0.01",
        "--only",
        "mailbox,snapshot_codec",
        "--json",
        str(path),
        capsys=capsys,
    )
    assert code == 0
    return path


def _plant(src: Path, dst: Path, key: str, factor: float) -> None:
    data = json.loads(src.read_text())
    for fig in data["figures"]:
        if fig["key"] == key:
            fig["value"] *= factor
    dst.write_text(json.dumps(data))


def test_a_planted_regression_is_flagged_and_exits_1(
    run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slower = tmp_path / "b.json"
    _plant(run_a, slower, "mailbox.us", 2.0)  # twice the time per message: 50 % worse
    code, out, _ = bench("compare", str(run_a), str(slower), capsys=capsys)
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("mailbox.us"))
    assert "REGRESSION" in line
    assert "-50.0%" in line
    codec = next(x for x in out.splitlines() if x.startswith("snapshot_codec.us"))
    assert "REGRESSION" not in codec
    assert "+0.0%" in codec
    assert "1 worse by more than 10%" in out


def test_an_improvement_or_a_small_change_is_not_a_regression(
    run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faster, noise = tmp_path / "f.json", tmp_path / "n.json"
    _plant(run_a, faster, "mailbox.us", 0.5)
    _plant(run_a, noise, "mailbox.us", 1.05)
    code, out, _ = bench("compare", str(run_a), str(faster), capsys=capsys)
    assert code == 0
    assert "+100.0%" in out
    assert "REGRESSION" not in out
    code, out, _ = bench("compare", str(run_a), str(noise), capsys=capsys)
    assert code == 0
    assert "REGRESSION" not in out
    code, out, _ = bench("compare", str(run_a), str(noise), "--threshold", "1", capsys=capsys)
    assert code == 1
    assert "REGRESSION" in out


def test_higher_is_better_figures_regress_when_they_fall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from openheim.bench import Figure, Report

    a = Report("local", {}, [Figure("c8.tokens_per_s", "aggregate throughput", 100.0, "tok/s")])
    b = Report("local", {}, [Figure("c8.tokens_per_s", "aggregate throughput", 80.0, "tok/s")])
    a.write_json(tmp_path / "a.json")
    b.write_json(tmp_path / "b.json")
    code, out, _ = bench(
        "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), capsys=capsys
    )
    assert code == 1
    assert "-20.0%" in out
    assert "REGRESSION" in out


def test_compare_rejects_what_it_cannot_compare(
    run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from openheim.bench import Report

    code, _, err = bench("compare", str(run_a), str(tmp_path / "none.json"), capsys=capsys)
    assert code == 2
    assert "no such file" in err
    (tmp_path / "other.json").write_text('{"hello": 1}')
    code, _, err = bench("compare", str(run_a), str(tmp_path / "other.json"), capsys=capsys)
    assert code == 2
    assert "not an openheim bench report" in err
    Report("local", {}).write_json(tmp_path / "local.json")
    code, _, err = bench("compare", str(run_a), str(tmp_path / "local.json"), capsys=capsys)
    assert code == 2
    assert "same command" in err
