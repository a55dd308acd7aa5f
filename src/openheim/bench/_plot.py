"""``--plot FILE.png``: throughput and latency against concurrency; overhead ratios as bars.

matplotlib is optional (the ``plot`` extra) and imported only here.
"""

from __future__ import annotations

import os
from typing import Any

from openheim.bench._report import Report
from openheim.errors import ConfigError

__all__ = ["check", "plot"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed; install the plot extra: "
            "pip install 'openheim[plot]' (or leave out --plot)"
        ) from exc
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def check(path: str | os.PathLike[str]) -> None:
    """Before a run: the name ends in .png and matplotlib is there (fail fast, not after it)."""
    if not str(path).lower().endswith(".png"):
        raise ConfigError(f"--plot {path}: the plot is a PNG file; give a name ending in .png")
    _pyplot()


def plot(report: Report, path: str | os.PathLike[str]) -> None:
    check(path)
    plt = _pyplot()
    fig = _overhead(plt, report) if report.command == "overhead" else _levels(plt, report)
    try:
        fig.savefig(os.fspath(path), dpi=80)
    finally:
        plt.close(fig)


def _title(report: Report) -> str:
    m = report.machine
    what = report.settings.get("model") or report.settings.get("url") or ""
    what = os.path.basename(str(what)) if report.command == "local" else what
    return (
        f"openheim bench {report.command} {what}\n"
        f"{m.get('cpu', '')}, {m.get('cores')} cores · {report.created[:10]}"
    )


def _levels(plt: Any, report: Report) -> Any:
    by: dict[str, dict[int, float]] = {}
    for f in report.figures:
        if f.concurrency is None or f.value is None:
            continue
        by.setdefault(f.key.split(".", 1)[1], {})[f.concurrency] = f.value
    levels = sorted(by.get("tokens_per_s", {}))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(levels, [by["tokens_per_s"][c] for c in levels], "o-", label="tokens/s")
    ax1.set_xlabel("concurrent requests")
    ax1.set_ylabel("aggregate tokens/s")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(levels, [str(c) for c in levels])
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.set_title("throughput")
    for key, label, style in (
        ("ttft_p50_ms", "TTFT p50", "o-"),
        ("ttft_p99_ms", "TTFT p99", "o--"),
        ("itl_p50_ms", "inter-token p50", "s-"),
        ("itl_p99_ms", "inter-token p99", "s--"),
    ):
        series = by.get(key, {})
        xs = [c for c in levels if c in series]
        if xs:
            ax2.plot(xs, [series[c] for c in xs], style, label=label)
    ax2.set_xlabel("concurrent requests")
    ax2.set_ylabel("ms")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(levels, [str(c) for c in levels])
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.set_title("latency")
    fig.suptitle(_title(report), fontsize=9)
    fig.tight_layout()
    return fig


def _overhead(plt: Any, report: Report) -> Any:
    figs = report.figures
    names = [f.key.rsplit(".", 1)[0] for f in figs]
    ratios = [f.ratio or 0.0 for f in figs]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(figs) + 1.5))
    bars = ax.barh(names, ratios, color=["#3b7dd8" if r else "#bbbbbb" for r in ratios])
    shown = [r for r in ratios if r > 0] or [1.0]
    left = min(0.3, min(shown) / 2)  # a log axis: a missing ratio's label starts here
    for bar, f in zip(bars, figs, strict=False):
        label = f"{f.ratio:.1f}× vs {f.baseline_name}" if f.ratio else "peer not installed"
        ax.text(
            bar.get_width() if f.ratio else left,
            bar.get_y() + bar.get_height() / 2,
            " " + label,
            va="center",
            fontsize=8,
            color="black" if f.ratio else "#666666",
        )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    # room on the right for the labels
    ax.set_xlim(left, max(10.0, max(shown)) * 15)
    ax.set_xlabel("peer time / openheim time (higher: openheim cheaper)")
    ax.invert_yaxis()
    ax.set_title(_title(report), fontsize=9)
    fig.tight_layout()
    return fig
