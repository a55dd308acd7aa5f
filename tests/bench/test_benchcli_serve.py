"""`openheim bench serve` against a real `openheim serve` on loopback running the tiny GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Served, bench, free_port, png_size, validate

pytestmark = pytest.mark.llama

TINY = ("--concurrency", "1,2", "--max-tokens", "6", "--rounds", "2")


def test_serve_streams_from_a_load_generator_and_writes_valid_json(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, png = tmp_path / "serve.json", tmp_path / "serve.png"
    code, out, err = bench(
        "serve",
        "--url",
        served.url,
        "--model",
        "tiny",
        *TINY,
        "--pid",
        str(served.pid),
        "--json",
        str(out_json),
        "--plot",
        str(png),
        capsys=capsys,
    )
    assert code == 0, out + err
    data = validate(out_json)
    assert data["command"] == "serve"
    assert data["settings"]["url"] == served.url
    assert data["settings"]["model"] == "tiny"
    figs = {f["key"]: f for f in data["figures"]}
    for c in (1, 2):
        assert figs[f"c{c}.errors"]["value"] == 0
        assert figs[f"c{c}.tokens_per_s"]["value"] > 0
        assert figs[f"c{c}.requests_per_s"]["value"] > 0
        assert figs[f"c{c}.ttft_p50_ms"]["value"] > 0
        assert figs[f"c{c}.itl_p99_ms"]["value"] >= 0
        # the server's own peak memory, read from /proc for --pid
        assert figs[f"c{c}.peak_rss_mb"]["value"] > 1
        assert f"server pid {served.pid}" in figs[f"c{c}.peak_rss_mb"]["note"]
    assert png_size(png) == (800, 320)


def test_serve_without_pid_says_memory_is_not_measured(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "s.json"
    code, out, _ = bench(
        "serve",
        "--url",
        served.url,
        "--model",
        "tiny",
        "--concurrency",
        "1",
        "--max-tokens",
        "4",
        "--rounds",
        "1",
        "--json",
        str(out_json),
        capsys=capsys,
    )
    assert code == 0
    fig = next(f for f in validate(out_json)["figures"] if f["key"] == "c1.peak_rss_mb")
    assert fig["value"] is None
    assert "not measured" in fig["note"]
    assert "not measured" in out


def test_serve_errors_are_clear(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = bench(
        "serve",
        "--url",
        served.url,
        "--model",
        "no-such-agent",
        "--concurrency",
        "1",
        "--max-tokens",
        "2",
        "--rounds",
        "1",
        capsys=capsys,
    )
    assert code == 2
    assert "every request" in err
    assert "HTTP 404" in err
    code, _, err = bench("serve", "--url", "127.0.0.1:8000/v1", "--model", "x", capsys=capsys)
    assert code == 2
    assert "base URL" in err
    monkeypatch.delenv("OH_BENCH_NO_KEY", raising=False)
    code, _, err = bench(
        "serve",
        "--url",
        served.url,
        "--model",
        "tiny",
        "--api-key-env",
        "OH_BENCH_NO_KEY",
        capsys=capsys,
    )
    assert code == 2
    assert "OH_BENCH_NO_KEY" in err
    port = free_port()  # nothing listens there
    code, _, err = bench(
        "serve",
        "--url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "tiny",
        "--concurrency",
        "1",
        "--max-tokens",
        "2",
        "--rounds",
        "1",
        capsys=capsys,
    )
    assert code == 2
    assert "ConnectError" in err


def test_serve_sends_the_api_key_from_the_named_variable(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A loopback server without keys accepts any bearer token: the run succeeds with one set.
    monkeypatch.setenv("OH_BENCH_KEY", "sk-test")
    code, out, err = bench(
        "serve",
        "--url",
        served.url,
        "--model",
        "tiny",
        "--api-key-env",
        "OH_BENCH_KEY",
        "--concurrency",
        "1",
        "--max-tokens",
        "2",
        "--rounds",
        "1",
        capsys=capsys,
    )
    assert code == 0, out + err


def test_extra_body_fields_go_into_every_request(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "x.json"
    # max_tokens from --extra-body overrides --max-tokens: every reply is 3 tokens long.
    code, out, err = bench(
        "serve", "--url", served.url, "--model", "tiny", "--concurrency", "2",
        "--max-tokens", "9", "--rounds", "1", "--extra-body", '{"max_tokens": 3}',
        "--json", str(out_json), capsys=capsys,
    )  # fmt: skip
    assert code == 0, out + err
    data = validate(out_json)
    assert data["settings"]["extra_body"] == {"max_tokens": 3}
    figs = {f["key"]: f["value"] for f in data["figures"]}
    assert figs["c2.tokens_per_s"] == pytest.approx(figs["c2.requests_per_s"] * 3)
    code, _, err = bench("serve", "--url", served.url, "--model", "tiny", "--extra-body", "[1]",
                         capsys=capsys)  # fmt: skip
    assert code == 2
    assert "JSON object" in err
