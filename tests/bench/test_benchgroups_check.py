"""`python benches/run.py GROUP --check`: exits 1 on a figure below its stated target."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHES = Path(__file__).resolve().parents[2] / "benches"

PLANTED = """
from _util import Row

def run():
    return [
        Row("met", 30.0, 1.0, "r/s", "baseline", target=10.0),
        Row("planted miss", 5.0, 1.0, "r/s", "baseline", target=10.0),
    ]
"""

MET = """
from _util import Row

def run():
    return [
        Row("met", 30.0, 1.0, "r/s", "baseline", target=10.0),
        Row("within limit", 100.0, 1.0, "ms", "baseline", False, limit=150.0),
    ]
"""

OVER_LIMIT = """
from _util import Row

def run():
    return [Row("first run", 180.0, 20.0, "ms", "python -c pass", False, limit=150.0)]
"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHES))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, text in (
        ("benchgroups_planted", PLANTED),
        ("benchgroups_met", MET),
        ("benchgroups_limit", OVER_LIMIT),
    ):
        (tmp_path / f"{name}.py").write_text(text)
    spec = importlib.util.spec_from_file_location("benches_run", BENCHES / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(module.GROUPS, "planted", [("benchgroups_planted", "planted")])
    monkeypatch.setitem(module.GROUPS, "met", [("benchgroups_met", "met")])
    monkeypatch.setitem(module.GROUPS, "limit", [("benchgroups_limit", "limit")])
    return module


def test_check_exits_1_on_a_ratio_below_target(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["planted", "--check"]) == 1
    out = capsys.readouterr().out
    assert "BELOW TARGET" in out
    assert "benchgroups_planted: planted miss: BELOW TARGET" in out
    assert "met: " not in out.split("missed their target")[1]


def test_without_check_the_miss_is_reported_but_exit_is_0(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["planted"]) == 0
    assert "1 figure(s) missed their target" in capsys.readouterr().out


def test_check_exits_0_when_every_figure_meets_its_target(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["met", "--check"]) == 0
    assert "missed" not in capsys.readouterr().out


def test_check_exits_1_on_an_absolute_limit_missed(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["limit", "--check"]) == 1
    assert "first run: MISSES LIMIT" in capsys.readouterr().out


def test_unknown_group_or_option_is_a_usage_error(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["nonesuch"]) == 2
    assert "unknown benchmark group 'nonesuch'" in capsys.readouterr().out
    assert runner.main(["met", "--chek"]) == 2
    assert "usage: python benches/run.py" in capsys.readouterr().out
