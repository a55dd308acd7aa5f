"""`openheim bench local` on the tiny generated GGUF: table, JSON (schema-valid), plot, --check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import bench, png_size, validate

pytestmark = pytest.mark.llama

TINY = ("--concurrency", "1,3", "--max-tokens", "8", "--rounds", "1", "--threads", "1")


def test_local_writes_every_figure_per_level_to_schema_valid_json(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "local.json"
    code, out, _ = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--json", str(out_json), capsys=capsys
    )
    assert code == 0, out
    data = validate(out_json)
    assert data["command"] == "local"
    assert data["settings"]["concurrency"] == [1, 3]
    assert data["settings"]["max_tokens"] == 8
    assert data["versions"]["openheim"]
    assert data["machine"]["cores"] >= 1
    assert data["machine"]["device"].startswith(("CPU", "GPU"))
    figs = {f["key"]: f for f in data["figures"]}
    for c in (1, 3):
        for key in (
            "tokens_per_s",
            "requests_per_s",
            "ttft_p50_ms",
            "ttft_p90_ms",
            "ttft_p99_ms",
            "peak_rss_mb",
        ):
            assert figs[f"c{c}.{key}"]["value"] > 0, key
        # Tokens read together have gaps of 0; a gap is never negative or missing.
        assert figs[f"c{c}.itl_p50_ms"]["value"] >= 0
        assert figs[f"c{c}.itl_p99_ms"]["value"] >= figs[f"c{c}.itl_p50_ms"]["value"]
        assert figs[f"c{c}.errors"]["value"] == 0
        assert figs[f"c{c}.tokens_per_s"]["concurrency"] == c
    # 3 requests of exactly 8 tokens at concurrency 3: requests/s × 8 = tokens/s
    assert figs["c3.tokens_per_s"]["value"] == pytest.approx(figs["c3.requests_per_s"]["value"] * 8)
    assert "concurrency     tok/s" in out  # one row per level
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "3 "))]
    assert [r[0] for r in rows] == ["1", "3"]
    assert all(r[-1] == "0" for r in rows)  # errors
    assert f"wrote {out_json}" in out


def test_local_plot_is_a_png_of_throughput_and_latency(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "p.png"
    code, out, _ = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--plot", str(png), capsys=capsys
    )
    assert code == 0, out
    assert png_size(png) == (800, 320)  # 10 × 4 inches at 80 dpi: two panels
    assert png.stat().st_size < 100_000


def test_check_exits_1_on_a_planted_miss_and_0_when_met(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "miss.json"
    code, out, err = bench(
        "local",
        "--model",
        str(tiny_gguf),
        *TINY,
        "--check",
        "--target",
        "tokens_per_s=1e12",
        "--target",
        "c1.errors=0",
        "--json",
        str(out_json),
        capsys=capsys,
    )
    assert code == 1
    assert "c1.tokens_per_s" in err
    assert "c3.tokens_per_s" in err
    assert "c1.errors" not in err
    assert "MISSED" in out
    figs = {f["key"]: f for f in json.loads(out_json.read_text())["figures"]}
    assert figs["c1.tokens_per_s"]["target"] == {"value": 1e12, "of": "value", "met": False}
    assert figs["c1.errors"]["target"]["met"] is True
    # The same miss without --check is reported but does not fail the command.
    code, _, err = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--target", "tokens_per_s=1e12", capsys=capsys
    )
    assert code == 0
    assert "missed their target" in err
    # A latency target is a ceiling: a generous one is met.
    code, _, _ = bench(
        "local",
        "--model",
        str(tiny_gguf),
        *TINY,
        "--check",
        "--target",
        "ttft_p99_ms=1e9",
        capsys=capsys,
    )
    assert code == 0


def test_bad_input_gets_a_clear_error(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bench("local", "--model", str(tmp_path / "none.gguf"), capsys=capsys)
    assert code == 2
    assert "no GGUF file" in err
    code, _, err = bench("local", "--model", str(tiny_gguf), "--concurrency", "0,x", capsys=capsys)
    assert code == 2
    assert "positive integers" in err
    code, _, err = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--target", "speed=3", capsys=capsys
    )
    assert code == 2
    assert "names no figure" in err
    assert "tokens_per_s" in err
    code, _, err = bench("local", "--model", str(tiny_gguf), "--target", "nonsense", capsys=capsys)
    assert code == 2
    assert "KEY=NUMBER" in err
    code, _, err = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--plot", str(tmp_path / "x.svg"), capsys=capsys
    )
    assert code == 2
    assert "ending in .png" in err


def test_prompts_file_and_its_errors(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '"one"\n{"prompt": "two"}\n{"messages": [{"role": "user", "content": "x"}]}\n'
    )
    out_json = tmp_path / "p.json"
    code, out, _ = bench(
        "local",
        "--model",
        str(tiny_gguf),
        *TINY,
        "--prompts",
        str(prompts),
        "--json",
        str(out_json),
        capsys=capsys,
    )
    assert code == 0, out
    assert validate(out_json)["settings"]["prompts"] == 3
    prompts.write_text('{"text": 1}\n')
    code, _, err = bench(
        "local", "--model", str(tiny_gguf), "--prompts", str(prompts), capsys=capsys
    )
    assert code == 2
    assert "p.jsonl:1" in err


def test_plot_without_matplotlib_names_the_extra(
    tiny_gguf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ModuleNotFoundError
    code, _, err = bench(
        "local", "--model", str(tiny_gguf), *TINY, "--plot", str(tmp_path / "p.png"), capsys=capsys
    )
    assert code == 2
    assert "openheim[plot]" in err
    assert "matplotlib" in err
    assert not (tmp_path / "p.png").exists()
