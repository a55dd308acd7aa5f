"""`make wheel` builds a manylinux wheel that works outside the source tree."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_manylinux_wheel_installs_and_runs_outside_tree(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("auditwheel repairs Linux wheels only")
    for old in glob.glob(str(ROOT / "wheels" / "openheim-*.whl")):
        os.unlink(old)
    subprocess.run(
        ["make", "-C", str(ROOT), "wheel", f"VENV={sys.prefix}"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    wheels = glob.glob(str(ROOT / "wheels" / "openheim-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert "manylinux" in os.path.basename(wheel)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("openheim/_core.") and n.endswith(".so") for n in names)
    assert "openheim/_core.pyi" in names
    assert "openheim/py.typed" in names
    assert not any(n.endswith((".pyx", ".pxi", ".c")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel],
        check=True,
        timeout=600,
    )
    code = (
        "import openheim, threading\n"
        "assert 'site-packages' in openheim.__file__, openheim.__file__\n"
        "box = openheim.Mailbox(2)\n"
        "t = threading.Thread(target=lambda: [box.put_blocking(i) for i in range(100)])\n"
        "t.start(); got = [box.get_blocking(timeout=10) for _ in range(100)]; t.join()\n"
        "print(openheim.__version__, sum(got))\n"
    )
    proc = subprocess.run(
        [str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    import openheim

    assert proc.stdout.split() == [openheim.__version__, str(sum(range(100)))]
    cli = subprocess.run(
        [str(venv / "bin" / "openheim"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert cli.stdout.strip() == f"openheim {openheim.__version__}"

    # Only the base wheel: each command that needs an extra says which, in one line.
    project = tmp_path / "project"
    project.mkdir()
    (project / "openheim.toml").write_text(
        '[agents.local]\nmodel = "llama:m.gguf"\n\n[store]\nurl = "memory://"\n'
    )
    (project / "m.gguf").write_bytes(b"GGUF")
    for args, extra in (
        (["run", "local", "hi"], "local"),
        (["chat"], "cli"),
        (["serve"], "server"),
        (["demo"], "demo"),
    ):
        res = subprocess.run(
            [str(venv / "bin" / "openheim"), *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(f"openheim {args[0]}: "), res.stderr
        assert f"pip install 'openheim[{extra}]'" in last
