"""The hardening tests drive the soak's and the fuzzers' own code at CI scale."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
for folder in (ROOT / "soak", ROOT / "fuzz"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
