"""The README's Python examples run as written (and print what they say)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_python_examples() -> None:
    assert len(_blocks()) >= 2


def test_readme_examples_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the real-model block stays offline
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, block in enumerate(_blocks()):
        exec(compile(block, f"README.md:block{i}", "exec"), namespace)
    out = capsys.readouterr().out
    # Each `print(x)  # expected` line printed its expected text.
    for block in _blocks():
        for line in block.splitlines():
            m = re.match(r"\s*print\((.*)\)\s+# (.+)$", line)
            if m and "end=" not in m.group(1):
                assert m.group(2).strip() in out, f"README promised {m.group(2)!r}: {out!r}"
