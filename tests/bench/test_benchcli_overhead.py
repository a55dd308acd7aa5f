"""`openheim bench overhead`: every case measured, peers reported (absent ones said so)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bench, png_size, validate

from openheim.bench.cases import CASES, peer_installed

QUICK = ("--repeat", "1", "--seconds", "0.01")


def test_overhead_measures_every_case_beside_its_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, png = tmp_path / "o.json", tmp_path / "o.png"
    code, out, err = bench(
        "overhead", *QUICK, "--json", str(out_json), "--plot", str(png), capsys=capsys
    )
    assert code == 0, out + err
    data = validate(out_json)
    figs = {f["key"]: f for f in data["figures"]}
    assert set(figs) == {f"{c.key}.us" for c in CASES}
    for case in CASES:
        fig = figs[f"{case.key}.us"]
        assert fig["value"] > 0
        assert fig["higher_is_better"] is False
        if peer_installed(case):
            assert fig["baseline"]["value"] > 0
            assert fig["baseline"]["ratio"] == pytest.approx(
                fig["baseline"]["value"] / fig["value"]
            )
        else:  # named in the table as absent, no error
            assert fig["baseline"]["value"] is None
            assert fig["baseline"]["ratio"] is None
            assert "not installed" in fig["baseline"]["name"]
            assert f"{case.peer_name}: not installed" in out
    # stdlib and msgspec peers are always there
    assert figs["mailbox.us"]["baseline"]["value"] > 0
    assert figs["snapshot_codec.us"]["baseline"]["value"] > 0
    width, height = png_size(png)
    assert width == 720
    assert height > 200


def test_only_runs_the_named_cases_and_rejects_unknown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "o.json"
    code, _, _ = bench(
        "overhead",
        *QUICK,
        "--only",
        "mailbox,snapshot_codec",
        "--json",
        str(out_json),
        capsys=capsys,
    )
    assert code == 0
    assert [f["key"] for f in validate(out_json)["figures"]] == ["mailbox.us", "snapshot_codec.us"]
    code, _, err = bench("overhead", "--only", "mailbox,teleport", capsys=capsys)
    assert code == 2
    assert "teleport" in err
    assert "agent_loop" in err


def test_a_ratio_target_missed_fails_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bench(
        "overhead",
        *QUICK,
        "--only",
        "mailbox",
        "--check",
        "--target",
        "mailbox.us=0.000001",
        capsys=capsys,
    )
    assert code == 1
    assert "mailbox.us" in err


def test_the_installed_entry_point_runs_it(tmp_path: Path) -> None:
    out_json = tmp_path / "o.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "openheim",
            "bench",
            "overhead",
            *QUICK,
            "--only",
            "agent_loop",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "agent run: tool call + answer" in res.stdout
    assert "overhead [" in res.stderr  # the progress bar (plain lines off a terminal)
    validate(out_json)
