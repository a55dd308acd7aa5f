"""``openheim bench overhead``: every case of :mod:`openheim.bench.cases`, beside its peer."""

from __future__ import annotations

from collections.abc import Callable

from openheim.bench._report import Figure, Progress, Report
from openheim.bench.cases import CASES, measure, peer_installed
from openheim.errors import ConfigError

__all__ = ["run_overhead"]


def run_overhead(
    *,
    repeat: int,
    seconds: float,
    only: list[str] | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> Report:
    cases = CASES
    if only:
        known = {c.key for c in CASES}
        unknown = [k for k in only if k not in known]
        if unknown:
            raise ConfigError(
                f"--only {','.join(unknown)}: no such case; choose from {', '.join(sorted(known))}"
            )
        cases = [c for c in CASES if c.key in only]
    report = Report(
        "overhead",
        {"repeat": repeat, "seconds_per_batch": seconds, "cases": [c.key for c in cases]},
    )
    report.machine["device"] = "CPU (framework code only, no model)"
    bar = progress(len(cases)) if progress else None
    try:
        for case in cases:
            present = peer_installed(case)
            ours, peer = measure(case, repeat=repeat, seconds=seconds, with_peer=present)
            report.add(
                Figure(
                    f"{case.key}.us",
                    case.name,
                    ours,
                    case.unit,
                    higher_is_better=False,
                    group="framework overhead (time per unit; ratio = peer / openheim)",
                    baseline=peer,
                    baseline_name=case.peer_name if present else f"{case.peer_name}: not installed",
                    note=None if present else _install_hint(case.peer_modules),
                    target=case.target if present else None,
                    target_is_ratio=True,
                )
            )
            if bar:
                bar.step(case.key)
    finally:
        if bar:
            bar.close()
    return report


def _install_hint(modules: tuple[str, ...]) -> str:
    """How to add a missing peer (autogen-core is not in the bench extra: it pins protobuf)."""
    if any(m.startswith("autogen") for m in modules):
        return "to compare: pip install autogen-core"
    return "to compare: pip install 'openheim[bench]'"
