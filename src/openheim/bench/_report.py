"""A benchmark run as one document: its figures, the table, the JSON file, targets, comparison.

Every command of ``openheim bench`` produces a :class:`Report`: the machine,
the versions, the settings and a list of :class:`Figure`. The table, the
``--json`` file (validated by ``schema.json`` in this package), ``--check``
and ``openheim bench compare`` all read the same figures.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "SCHEMA_ID",
    "Figure",
    "Progress",
    "Report",
    "compare",
    "load_report",
    "machine",
    "schema",
    "versions",
]

SCHEMA_ID = "openheim-bench/1"

# Distributions whose versions a report records when they are installed.
_DISTRIBUTIONS = (
    "openheim",
    "llama-cpp-python",
    "msgspec",
    "httpx",
    "pydantic-ai-slim",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "autogen-core",
    "matplotlib",
)


@dataclass
class Figure:
    """One measured figure, optionally beside a baseline measured in the same run.

    ``key`` is stable across runs (``compare`` matches on it); ``ratio`` is
    how many times better ours is than the baseline (baseline/ours when lower
    is better). ``target`` is a floor on ``value`` (a ceiling when lower is
    better), or, with ``target_is_ratio``, a floor on ``ratio``.
    """

    key: str
    name: str
    value: float | None
    unit: str
    higher_is_better: bool = True
    group: str = ""
    concurrency: int | None = None
    baseline: float | None = None
    baseline_name: str | None = None
    note: str | None = None
    target: float | None = None
    target_is_ratio: bool = False

    @property
    def ratio(self) -> float | None:
        v, b = self.value, self.baseline
        if v is None or b is None or v <= 0 or b <= 0:
            return None
        return v / b if self.higher_is_better else b / v

    def meets_target(self) -> bool | None:
        """None without a target (or a figure to check), else whether the figure meets it."""
        if self.target is None:
            return None
        got = self.ratio if self.target_is_ratio else self.value
        if got is None or math.isnan(got):
            return None
        if self.target_is_ratio or self.higher_is_better:
            return got >= self.target
        return got <= self.target

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "group": self.group,
            "value": _finite(self.value),
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
        }
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.baseline_name is not None:
            out["baseline"] = {
                "name": self.baseline_name,
                "value": _finite(self.baseline),
                "ratio": _finite(self.ratio),
            }
        if self.note:
            out["note"] = self.note
        if self.target is not None:
            out["target"] = {
                "value": self.target,
                "of": "ratio" if self.target_is_ratio else "value",
                "met": self.meets_target(),
            }
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        base = data.get("baseline") or {}
        target = data.get("target") or {}
        return cls(
            key=data["key"],
            name=data["name"],
            value=data["value"],
            unit=data["unit"],
            higher_is_better=data["higher_is_better"],
            group=data.get("group", ""),
            concurrency=data.get("concurrency"),
            baseline=base.get("value"),
            baseline_name=base.get("name"),
            note=data.get("note"),
            target=target.get("value"),
            target_is_ratio=target.get("of") == "ratio",
        )


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else float(x)


@dataclass
class Report:
    command: str
    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    versions: dict[str, str | None] = field(default_factory=lambda: versions())
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "command": self.command,
            "created": self.created,
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "figures": [f.to_json() for f in self.figures],
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        data = self.to_json()
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def misses(self) -> list[Figure]:
        return [f for f in self.figures if f.meets_target() is False]

    def print_table(self, out: TextIO | None = None) -> None:
        out = out or sys.stdout
        m = self.machine
        print(
            f"\nopenheim bench {self.command} · {self.created} · {m.get('cpu')} "
            f"({m.get('cores')} cores, {m.get('memory_gb')} GB, load {m.get('load_avg')}) · "
            f"{m.get('device', '')}".rstrip(" ·"),
            file=out,
        )
        if self.figures and all(f.concurrency is not None for f in self.figures):
            self._print_levels(out)
            return
        groups: dict[str, list[Figure]] = {}
        for f in self.figures:
            groups.setdefault(f.group, []).append(f)
        for group, figs in groups.items():
            if group:
                print(f"\n== {group}", file=out)
            with_base = any(f.baseline_name for f in figs)
            w = min(60, max([44, *(len(f.name) for f in figs)]))
            head = f"{'figure':<{w}} {'value':>12} {'unit':<6}"
            if with_base:
                head += f" {'baseline':>12}  {'ratio':>7}  baseline is"
            print(head + "  target", file=out)
            for f in figs:
                line = f"{f.name:<{w}} {_fmt(f.value):>12} {f.unit:<6}"
                if with_base:
                    if f.baseline_name:
                        r = f.ratio
                        line += (
                            f" {_fmt(f.baseline):>12}  "
                            f"{(f'{r:.2f}×' if r is not None else '-'):>7}  {f.baseline_name}"
                        )
                    else:
                        line += f" {'':>12}  {'':>7}  "
                if f.note:
                    line += f" ({f.note})"
                line += "  " + _target_text(f)
                print(line.rstrip(), file=out)

    def _print_levels(self, out: TextIO) -> None:
        """One row per concurrency (local, serve); targets listed below the table."""
        cols = [
            ("tokens_per_s", "tok/s"),
            ("requests_per_s", "req/s"),
            ("ttft_p50_ms", "TTFT p50"),
            ("ttft_p90_ms", "p90"),
            ("ttft_p99_ms", "p99 ms"),
            ("itl_p50_ms", "ITL p50"),
            ("itl_p90_ms", "p90"),
            ("itl_p99_ms", "p99 ms"),
            ("peak_rss_mb", "peak MiB"),
            ("errors", "errors"),
        ]
        by: dict[int, dict[str, Figure]] = {}
        for f in self.figures:
            assert f.concurrency is not None
            by.setdefault(f.concurrency, {})[f.key.split(".", 1)[1]] = f
        print("\n" + f"{'concurrency':>11} " + " ".join(f"{h:>9}" for _, h in cols), file=out)
        for c in sorted(by):
            row = by[c]
            cells = []
            for key, _ in cols:
                got = row.get(key)
                cell = _fmt(got.value) if got is not None else "-"
                if got is not None and got.meets_target() is False:
                    cell += "!"
                cells.append(f"{cell:>9}")
            print(f"{c:>11} " + " ".join(cells), file=out)
        notes = {f.note for f in self.figures if f.note and f.key.endswith("peak_rss_mb")}
        for note in sorted(notes):
            print(f"peak MiB: {note}", file=out)
        targeted = [f for f in self.figures if f.target is not None]
        if targeted:
            print("\ntargets (! in the table: missed)", file=out)
            for f in targeted:
                print(f"  {f.key:<24} {_fmt(f.value):>10} {f.unit:<6} {_target_text(f)}", file=out)


def _fmt(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.3g}"


def _target_text(f: Figure) -> str:
    if f.target is None:
        return ""
    sign = "≥" if (f.target_is_ratio or f.higher_is_better) else "≤"
    what = f"{sign}{f.target:g}{'×' if f.target_is_ratio else ''}"
    met = f.meets_target()
    return f"{what} {'ok' if met else ('MISSED' if met is False else '')}".rstrip()


# ---- the machine and the versions -----------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        # Other work on the machine during the run (1-minute load average at the start).
        "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


# ---- the schema, loading -----------------------------------------------------------------


def schema() -> dict[str, Any]:
    """The JSON schema of a report file (``schema.json`` beside this module)."""
    data: dict[str, Any] = json.loads(
        (Path(__file__).with_name("schema.json")).read_text(encoding="utf-8")
    )
    return data


def load_report(path: str | os.PathLike[str]) -> Report:
    from openheim.errors import ConfigError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file (give a file written by --json)") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}); give a file written by --json") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_ID:
        raise ConfigError(
            f"{path} is not an openheim bench report (its 'schema' is not {SCHEMA_ID!r}); "
            "give a file written by `openheim bench ... --json FILE`"
        )
    return Report(
        command=data["command"],
        settings=data.get("settings", {}),
        figures=[Figure.from_json(f) for f in data.get("figures", [])],
        machine=data.get("machine", {}),
        versions=data.get("versions", {}),
        created=data.get("created", ""),
    )


# ---- compare ---------------------------------------------------------------------------


@dataclass
class Change:
    key: str
    name: str
    unit: str
    before: float | None
    after: float | None
    change: float | None  # relative change in the better direction: +0.1 = 10 % better
    regression: bool


def compare(a: Report, b: Report, threshold: float = 0.10) -> list[Change]:
    """Figures of ``b`` against the same figures of ``a``; worse by more than threshold flags."""
    before = {f.key: f for f in a.figures}
    out = []
    for f in b.figures:
        old = before.get(f.key)
        if old is None:
            continue
        change = None
        if old.value and f.value is not None and old.value > 0 and f.value > 0:
            rel = f.value / old.value - 1
            change = rel if f.higher_is_better else old.value / f.value - 1
        out.append(
            Change(
                f.key,
                f.name if not f.group else f"{f.group}: {f.name}",
                f.unit,
                old.value,
                f.value,
                change,
                change is not None and change < -threshold,
            )
        )
    return out


def print_changes(changes: list[Change], threshold: float, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(
        f"{'figure':<24} {'before':>11} {'after':>11} {'unit':<6} {'change':>8}  {'':<10}  name",
        file=out,
    )
    for c in changes:
        pct = f"{c.change * 100:+.1f}%" if c.change is not None else "-"
        flag = "REGRESSION" if c.regression else ""
        print(
            f"{c.key:<24} {_fmt(c.before):>11} {_fmt(c.after):>11} {c.unit:<6} {pct:>8}  "
            f"{flag:<10}  {c.name}",
            file=out,
        )
    n = sum(c.regression for c in changes)
    print(
        f"\n{len(changes)} figures compared; {n} worse by more than {threshold * 100:g}% "
        "(change: + is better)",
        file=out,
    )


# ---- the progress bar ------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()

    def step(self, what: str = "", n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw(what)

    def _draw(self, what: str) -> None:
        width = 24
        filled = int(width * self.done / self.total)
        bar = "█" * filled + "░" * (width - filled)
        text = (
            f"{self.label} [{bar}] {self.done}/{self.total} "
            f"{time.perf_counter() - self.t0:5.1f}s {what}"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:120])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
