"""What ``bench local`` and ``bench serve`` share: prompts, per-request timings, a level's figures.

A *level* is one concurrency: that many clients each send ``rounds``
requests one after another (a closed loop), every request streaming its
tokens. From the timings of every request come the level's figures:
aggregate tokens/s and requests/s over the level's wall time, time to the
first token and inter-token latency (p50/p90/p99, every token gap of every
request counts once: a read that brings several tokens spreads its gap over
them, and tokens that arrive with the first one count as gaps of 0), and
peak memory when it is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openheim.bench._report import Figure, Report
from openheim.errors import ConfigError

__all__ = [
    "PROMPTS",
    "Level",
    "Timing",
    "add_level_figures",
    "apply_targets",
    "load_prompts",
    "parse_concurrency",
    "parse_targets",
    "percentile",
]

# The fixed prompt set: short, varied, the same for every run (and every server).
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "List some facts about the moon.",
    "Describe a busy market in the morning.",
    "Summarize the rules of chess for a beginner.",
    "Give three tips for writing clear emails.",
    "What makes a good cup of tea?",
    "Describe the water cycle to a child.",
]


@dataclass
class Timing:
    """One request: seconds from its start to the first token, the gaps between tokens."""

    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None


@dataclass
class Level:
    concurrency: int
    wall: float
    timings: list[Timing]
    peak_rss_mb: float | None = None
    peak_rss_of: str = "this process"

    @property
    def ok(self) -> list[Timing]:
        return [t for t in self.timings if t.error is None]


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation; None without values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    at = (len(xs) - 1) * p / 100
    lo = int(at)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(n < 1 for n in levels):
        raise ConfigError(
            f"--concurrency {text!r}: give positive integers separated by commas, e.g. 1,2,4,8"
        )
    return sorted(set(levels))


def parse_targets(items: list[str] | None) -> dict[str, float]:
    """``--target KEY=VALUE`` options: a figure key (``c8.tokens_per_s``) or its last part."""
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"--target {item!r}: write KEY=NUMBER, e.g. --target tokens_per_s=50 or "
                "--target c8.ttft_p99_ms=500 (the keys are in the --json file)"
            ) from None
    return out


def apply_targets(report: Report, targets: dict[str, float]) -> None:
    """Set each figure's target from ``--target`` (full key first, then its last part)."""
    known = {f.key for f in report.figures} | {f.key.split(".", 1)[-1] for f in report.figures}
    unknown = sorted(k for k in targets if k not in known)
    if unknown:
        raise ConfigError(
            f"--target names no figure of this run: {', '.join(unknown)}; the keys are "
            f"{', '.join(sorted(known))}"
        )
    for f in report.figures:
        short = f.key.split(".", 1)[-1]
        value = targets.get(f.key, targets.get(short))
        if value is not None:
            f.target, f.target_is_ratio = value, False


def load_prompts(path: str | None) -> list[Any]:
    """``--prompts file.jsonl``: one prompt a line, a JSON string or {"prompt": ...} or
    {"messages": [...]}; the fixed set without a file."""
    if path is None:
        return list(PROMPTS)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--prompts {path}: cannot read it ({exc.strerror})") from exc
    prompts: list[Any] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--prompts {path}:{n}: not JSON ({exc.msg})") from exc
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            item = item["prompt"]
        if isinstance(item, str) or (
            isinstance(item, dict) and isinstance(item.get("messages"), list)
        ):
            prompts.append(item)
        else:
            raise ConfigError(
                f'--prompts {path}:{n}: each line is a JSON string, {{"prompt": "..."}} or '
                '{"messages": [...]}'
            )
    if not prompts:
        raise ConfigError(f"--prompts {path}: the file holds no prompts")
    return prompts


def prompt_text(prompt: Any) -> str:
    """A prompt as plain text (a messages prompt: its messages' contents)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content") or "") for m in prompt["messages"])


def add_level_figures(report: Report, level: Level) -> None:
    c = level.concurrency
    ok = level.ok
    group = f"concurrency {c}"
    tokens = sum(t.tokens for t in ok)
    wall = max(level.wall, 1e-9)
    ttft = [t.ttft * 1e3 for t in ok if t.ttft is not None]
    gaps = [g * 1e3 for t in ok for g in t.gaps]

    def fig(key: str, name: str, value: float | None, unit: str, higher: bool) -> None:
        report.add(Figure(f"c{c}.{key}", name, value, unit, higher, group=group, concurrency=c))

    fig("tokens_per_s", "aggregate throughput", tokens / wall, "tok/s", True)
    fig("requests_per_s", "requests completed", len(ok) / wall, "req/s", True)
    for p in (50, 90, 99):
        fig(f"ttft_p{p}_ms", f"time to first token p{p}", percentile(ttft, p), "ms", False)
    for p in (50, 90, 99):
        fig(f"itl_p{p}_ms", f"inter-token latency p{p}", percentile(gaps, p), "ms", False)
    errors = len(level.timings) - len(ok)
    fig("errors", "failed requests", float(errors), "", False)
    report.add(
        Figure(
            f"c{c}.peak_rss_mb",
            "peak memory",
            level.peak_rss_mb,
            "MiB",
            False,
            group=group,
            concurrency=c,
            note=f"peak RSS of {level.peak_rss_of}"
            if level.peak_rss_mb is not None
            else "not measured (a remote server; give --pid for one on this machine)",
        )
    )
