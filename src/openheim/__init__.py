"""openheim: build, run and serve LLM agents in production.

The public API is re-exported here; heavy parts load on first use so that
``import openheim`` stays cheap (no pydantic, httpx, llama_cpp, ... until used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openheim._version import __version__

try:
    from openheim import _core  # noqa: F401  (fail here, loudly, if the build is missing)
except ImportError as exc:  # pragma: no cover - exercised by the wheel test
    from openheim.errors import CoreMissingError

    raise CoreMissingError(
        "openheim's compiled core (openheim._core) is not installed or failed to load: "
        f"{exc}. openheim has no pure-Python fallback. Install a prebuilt wheel "
        "(`pip install openheim`) or build from source with a C compiler, "
        "CMake and Cython (`pip install .` or `make install` in a checkout)."
    ) from exc

from openheim._core import Mailbox

if TYPE_CHECKING:
    from openheim import errors

__all__ = [
    "Mailbox",
    "__version__",
    "errors",
]

_LAZY: dict[str, str] = {
    "errors": "openheim.errors",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'openheim' has no attribute {name!r}")
    import importlib

    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
