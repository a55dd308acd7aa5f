"""`make wheels` (slow): a repaired wheel per CPython 3.10-3.13 on the machine, each tested
in its own fresh venv; here only the interpreter running the tests, to keep it bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_script_finds_supported_interpreters_only() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import wheels
    finally:
        sys.path.pop(0)
    for py in wheels.find_pythons():
        out = subprocess.run(
            [str(py), "-c", "import sys; print(sys.version_info[:2] >= (3, 10))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "True", py


@pytest.mark.slow
def test_wheel_for_this_python_builds_repairs_and_passes_core_tests(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "wheels.py"),
            "--out",
            str(tmp_path),
            "--pythons",
            sys.executable,
            "--no-sdist",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core tests passed" in proc.stdout
    assert list(tmp_path.glob("openheim-*manylinux*.whl"))
