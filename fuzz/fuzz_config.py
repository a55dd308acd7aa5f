"""atheris fuzz target: the config loader (openheim.config.load_config).

    python fuzz/fuzz_config.py -runs=1000000

Each input becomes an openheim.toml, either as raw bytes or as a valid
skeleton with fuzzer-chosen values put into it (so the input gets past the
TOML parser into the schema checks). ``load_config`` may only return a
``Config`` or raise ``ConfigError`` with a message naming the file.
Agent models and tools are written as ``provider:model`` names of built-in
providers and of one module beside the file, so a valid config never imports
anything the fuzzer names.
"""

from __future__ import annotations

import os
import sys
import tempfile

from openheim.config import load_config
from openheim.errors import ConfigError

_SHM = "/dev/shm"
DIR = os.path.join(
    _SHM if os.path.isdir(_SHM) else tempfile.gettempdir(), f"openheim-fuzz-config-{os.getpid()}"
)
os.makedirs(DIR, exist_ok=True)
PATH = os.path.join(DIR, "openheim.toml")

SKELETON = """\
[providers.{p}]
type = "{ptype}"
base_url = "{url}"
api_key_env = "{env}"
models = [{models}]

[agents.{name}]
model = "{model}"
instructions = "{text}"
tools = [{tools}]
max_iterations = {n}

[agents.{name}.model_settings]
temperature = {f}
max_tokens = {n2}

[store]
url = "{store}"

[server]
max_body_bytes = {n3}
max_concurrent_runs_per_tenant = {n}

[[server.api_keys]]
tenant = "{text}"
{keyfield} = "{key}"
"""
FIELDS = (
    "p",
    "ptype",
    "url",
    "env",
    "models",
    "name",
    "model",
    "text",
    "tools",
    "n",
    "f",
    "n2",
    "store",
    "n3",
    "keyfield",
    "key",
)
_NAMES = ("openai", "anthropic", "llama", "acme", "", "a.b", "x y", "__import__")
_PICKS = {
    "ptype": ("openai", "anthropic", "", "grpc", "OPENAI"),
    "keyfield": ("key_env", "key_sha256", "key", "token"),
    "model": ("openai:gpt-4o-mini", "acme:m", "llama:/dev/null", "nope", ":", "a:", ":b", "llama:"),
}


def _value(field: str, raw: bytes) -> str:
    if field in _PICKS and raw:
        picks = _PICKS[field]
        return picks[raw[0] % len(picks)]
    if field in ("p", "name") and raw:
        return (
            _NAMES[raw[0] % len(_NAMES)]
            if raw[0] % 2
            else raw[1:].decode("ascii", "ignore").replace('"', "").replace("\n", "") or "x"
        )
    text = raw.decode("utf-8", "replace")
    if field in ("n", "n2", "n3"):
        return str(int.from_bytes(raw[:9] or b"\0", "little", signed=True))
    if field == "f":
        return repr(int.from_bytes(raw[:3] or b"\0", "little") / 1000.0)
    if field in ("models", "tools"):
        return ", ".join(
            '"' + p.replace('"', "").replace("\\", "") + '"' for p in text.split(",")[:4]
        )
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check(data: bytes) -> None:
    if not data:
        return
    if data[0] % 3 == 0:
        text = data[1:]
    else:
        parts = data[1:].split(b"\x00")
        values = {f: _value(f, parts[i] if i < len(parts) else b"") for i, f in enumerate(FIELDS)}
        text = SKELETON.format(**values).encode("utf-8", "surrogatepass")
        if data[0] % 3 == 2:  # drop some lines: missing keys and tables
            lines = text.split(b"\n")
            text = b"\n".join(
                line for i, line in enumerate(lines) if (data[i % len(data)] >> (i % 8)) & 1
            )
    with open(PATH, "wb") as f:
        f.write(text)
    try:
        load_config(PATH)
    except ConfigError as exc:
        assert str(exc), "a ConfigError without a message"  # noqa: PT017
        assert "openheim.toml" in str(exc) or "environment" in str(exc), str(exc)  # noqa: PT017


def main() -> None:
    import atheris

    atheris.instrument_func(check)
    with atheris.instrument_imports():
        import openheim.config  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
