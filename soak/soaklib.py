"""Shared pieces of the soak: a served project on loopback, RSS readings, the result table."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from openheim.testing.serve import free_port, start_serve, stop_process

HERE = Path(__file__).resolve().parent
KEYS = {"acme": "sk-soak-acme-key", "globex": "sk-soak-globex-key"}

BASE_CONFIG = f"""\
[agents.latent]
model = "soakflows:latent_model"

[agents.inject]
model = "soakflows:inject_model"
tools = ["soakflows:read_note"]

[store]
url = "{{store}}"

[server]
max_body_bytes = {{max_body}}
max_concurrent_runs_per_tenant = {{max_runs}}
shutdown_grace = 5

[[server.api_keys]]
tenant = "acme"
key_env = "SOAK_ACME_KEY"

[[server.api_keys]]
tenant = "globex"
key_sha256 = "{hashlib.sha256(KEYS["globex"].encode()).hexdigest()}"
"""


def write_project(
    folder: Path,
    store: str = "memory://",
    *,
    max_body: int = 65536,
    max_runs: int = 4096,
    extra: str = "",
) -> Path:
    """An openheim.toml with the soak's agents (and ``extra`` tables) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "soakflows.py", folder / "soakflows.py")
    path = folder / "openheim.toml"
    text = BASE_CONFIG.format(store=store, max_body=max_body, max_runs=max_runs) + extra
    path.write_text(text, encoding="utf-8")
    return path


def effect_counts(path: Path) -> Counter[tuple[str, str]]:
    """How often each (tag, step) was recorded in a flow's effects file
    (lines of ``tag step pid``; none yet if the file does not exist)."""
    if not path.exists():
        return Counter()
    out: Counter[tuple[str, str]] = Counter()
    for line in path.read_text().splitlines():
        tag, step, _pid = line.split()
        out[(tag, step)] += 1
    return out


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SOAK_ACME_KEY"] = KEYS["acme"]
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, tenant: str = "acme", timeout: float = 60) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=timeout
        )

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(
    config: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Served:
    """``openheim serve`` on loopback, returned once /readyz answers 200."""
    port = port or free_port()
    log = config.parent / f"serve-{port}.log"
    proc = start_serve(config, port=port, env=env or child_env(), log=log, timeout=120)
    return Served(proc, port, config, log)


def stop_server(served: Served) -> None:
    stop_process(served.proc, 30)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (from /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Row:
    """One line of the soak table."""

    area: str
    what: str
    tried: int
    survived: int
    bad: int  # lost, duplicated, crashed or got through: must be 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.bad == 0 and self.survived == self.tried


def table(rows: list[Row], title: str) -> str:
    head = ("area", "what", "tried", "held", "lost/dup/through", "ok", "notes")
    body = [
        (
            r.area,
            r.what,
            f"{r.tried:,}",
            f"{r.survived:,}",
            str(r.bad),
            "yes" if r.ok else "NO",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"

    def fmt(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    bad = sum(r.bad for r in rows)
    out = [title, line, fmt(head), line, *(fmt(b) for b in body), line]
    out.append(f"lost or duplicated or got through: {bad}   all held: {all(r.ok for r in rows)}")
    return "\n".join(out)
