"""Shared helpers for the benchmarks: medians of repeated runs, the ratio table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    name: str
    ours: float
    baseline: float
    unit: str
    baseline_name: str
    higher_is_better: bool = True
    target: float | None = (
        None  # required ratio (ours/baseline, or baseline/ours if lower is better)
    )
    limit: float | None = None  # absolute bound on `ours` (a maximum when lower is better)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline
        return self.baseline / self.ours

    def verdict(self) -> str:
        if self.limit is not None:
            within = (
                self.ours <= self.limit if not self.higher_is_better else self.ours >= self.limit
            )
            return "ok" if within else "MISSES LIMIT"
        if self.target is None:
            return ""
        return "ok" if self.ratio >= self.target else "BELOW TARGET"


def median_of(fn: Callable[[], float], repeat: int = 5) -> float:
    return statistics.median(fn() for _ in range(repeat))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n== {title}")
    print(f"{'benchmark':<46} {'openheim':>14} {'baseline':>14}  {'ratio':>7}  target  baseline is")
    for r in rows:
        tgt = f"≥{r.target:g}×" if r.target is not None else ""
        print(
            f"{r.name:<46} {r.ours:>10.4g} {r.unit:<3} {r.baseline:>10.4g} {r.unit:<3} "
            f"{r.ratio:>6.2f}×  {tgt:<6}  {r.baseline_name}  {r.verdict()}"
        )
