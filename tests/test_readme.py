"""The README's Python examples run as written: each block alone, in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _promises(block: str) -> list[str]:
    """What each `print(x)  # expected` line of a block says it prints."""
    out = []
    for line in block.splitlines():
        m = re.match(r"\s*print\((.*)\)\s+# (.+)$", line)
        if m and "end=" not in m.group(1):
            out.append(m.group(2).strip())
    return out


def test_readme_has_python_examples() -> None:
    blocks = _blocks()
    assert len(blocks) >= 6
    assert sum(len(_promises(b)) for b in blocks) >= 6


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(
            i,
            marks=[pytest.mark.llama]
            if "LlamaModel" in block
            else [pytest.mark.redis]
            if "redis://" in block
            else [],
        )
        for i, block in enumerate(_blocks())
    ],
)
def test_readme_block_runs_alone(index: int, tmp_path: Path) -> None:
    block = _blocks()[index]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PYTHONPATH")}
    proc = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"README block {index} failed alone:\n{block}\n{proc.stderr}"
    for promised in _promises(block):
        assert promised in proc.stdout, (
            f"README block {index} promised {promised!r}: {proc.stdout!r}"
        )


def test_the_local_model_example_without_gguf_names_the_extra(tmp_path: Path) -> None:
    block = next(b for b in _blocks() if "write_tiny_gguf" in b)
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['gguf'] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: write_tiny_gguf needs the gguf package")
    assert "pip install 'openheim[local]'" in last
