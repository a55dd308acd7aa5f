"""Import cost: `import openheim` against `import asyncio`, each in a fresh interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys

from _util import Row, print_table

CODE = "import time; t=time.perf_counter(); import {mod}; print(time.perf_counter()-t)"


def _fresh_import(mod: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(mod=mod)], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def run(repeat: int = 15) -> list[Row]:
    ours, base = [], []
    for _ in range(repeat):  # interleaved so machine noise hits both alike
        ours.append(_fresh_import("openheim"))
        base.append(_fresh_import("asyncio"))
    o, b = statistics.median(ours) * 1e3, statistics.median(base) * 1e3
    return [
        Row("import openheim vs import asyncio (fresh)", o, b, "ms", "asyncio", False, target=0.5)
    ]


if __name__ == "__main__":
    print_table(
        "import cost (lower is better; ratio = asyncio/openheim, target: ≤2× asyncio)", run()
    )
