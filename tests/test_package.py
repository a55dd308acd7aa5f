"""The package surface: version, CLI entry points, import cost, missing core."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import openheim

HEAVY = [
    "pydantic",
    "httpx",
    "llama_cpp",
    "redis",
    "psycopg",
    "sqlite3",
    "grpc",
    "uvicorn",
    "numpy",
    "asyncio",
]


def _run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, **kw
    )


def test_version_is_pep440() -> None:
    from packaging.version import Version

    assert str(Version(openheim.__version__)) == openheim.__version__


def test_all_is_sorted_and_resolvable() -> None:
    assert openheim.__all__ == sorted(openheim.__all__)
    for name in openheim.__all__:
        assert getattr(openheim, name) is not None


PUBLIC_API = [
    "Agent",
    "AgentEvent",
    "Approval",
    "ApprovalRequired",
    "Budget",
    "Done",
    "HistoryStore",
    "InMemoryHistory",
    "MCPServerHTTP",
    "MCPServerStdio",
    "Mailbox",
    "Message",
    "ModelSettings",
    "PendingApproval",
    "Retry",
    "RunContext",
    "RunResult",
    "RunState",
    "Runtime",
    "StopRun",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallArgsDelta",
    "ToolCallStarted",
    "ToolCalled",
    "ToolError",
    "ToolResult",
    "Toolset",
    "Usage",
    "UsageEvent",
    "Workflow",
    "WorkflowResult",
    "__version__",
    "errors",
    "reducer",
    "tool",
]


def test_public_api_is_pinned() -> None:
    """``openheim.__all__`` changes only on purpose: update this list with it."""
    assert openheim.__all__ == PUBLIC_API
    assert sorted(PUBLIC_API) == PUBLIC_API
    # Every lazy name is public, and dir() lists them all.
    lazy = set(openheim._LAZY)  # type: ignore[attr-defined]
    assert lazy <= set(PUBLIC_API)
    assert set(PUBLIC_API) - lazy == {"Mailbox", "__version__"}
    assert set(PUBLIC_API) <= set(dir(openheim))


def test_import_pulls_in_no_heavy_package() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import openheim
        heavy = {HEAVY!r}
        print(",".join(m for m in heavy if m in sys.modules))
        """
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"`import openheim` imported: {proc.stdout.strip()}"


def test_console_script_version_and_help() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "openheim")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"openheim {openheim.__version__}"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "usage: openheim" in proc.stdout


def test_python_dash_m() -> None:
    proc = _run("-m", "openheim", "--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"openheim {openheim.__version__}"
    proc = _run("-m", "openheim", "no-such-command")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_missing_core_fails_with_clear_error(tmp_path: object) -> None:
    # Shadow the compiled module with a broken one, as if the build were absent.
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "openheim._core":
                    raise ImportError("No module named 'openheim._core'")
                return None
        sys.meta_path.insert(0, Block())
        try:
            import openheim
        except ImportError as exc:
            from openheim.errors import CoreMissingError
            print(type(exc).__name__, isinstance(exc, CoreMissingError))
            print(exc)
        """
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    first, message = proc.stdout.split("\n", 1)
    assert first == "CoreMissingError True"
    assert "no pure-Python fallback" in message
    assert "pip install" in message


def test_every_module_has_a_layer() -> None:
    """The import contract places every top-level module of the package in a layer."""
    import pkgutil
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = config["contracts"][0]
    named = {
        name.strip().strip("()")
        for layer in contract["layers"]
        for name in layer.replace("|", ":").split(":")
    }
    modules = {f"openheim.{m.name}" for m in pkgutil.iter_modules(openheim.__path__)}
    assert modules - named == set(), "place these modules in the layers contract"
    assert not contract.get("ignore_imports")
