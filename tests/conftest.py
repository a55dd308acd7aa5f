"""Suite-wide fixtures and the service markers.

A test marked ``redis``, ``postgres`` or ``nats`` fails (it does not skip) when
its server is unreachable, unless the environment opts out of that marker with
``OPENHEIM_TEST_NO_REDIS=1`` / ``OPENHEIM_TEST_NO_POSTGRES=1`` /
``OPENHEIM_TEST_NO_NATS=1`` / ``OPENHEIM_TEST_NO_LLAMA=1``; then it is skipped.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
    "nats": ("127.0.0.1", 4222),
}
_reachable: dict[str, bool] = {}


def _opted_out(marker: str) -> bool:
    return os.environ.get(f"OPENHEIM_TEST_NO_{marker.upper()}", "") == "1"


def _is_up(name: str) -> bool:
    if name not in _reachable:
        host, port = SERVICES[name]
        try:
            with socket.create_connection((host, port), timeout=2):
                _reachable[name] = True
        except OSError:
            _reachable[name] = False
    return _reachable[name]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in SERVICES:
        if item.get_closest_marker(name) is None:
            continue
        if _opted_out(name):
            pytest.skip(f"{name} tests opted out with OPENHEIM_TEST_NO_{name.upper()}=1")
        if not _is_up(name):
            host, port = SERVICES[name]
            pytest.fail(
                f"this test needs {name} on {host}:{port}, which is unreachable. "
                f"Run `bash tests/services.sh` to start it, or set "
                f"OPENHEIM_TEST_NO_{name.upper()}=1 to skip {name} tests.",
                pytrace=False,
            )
    if item.get_closest_marker("llama") is not None:
        if _opted_out("llama"):
            pytest.skip("llama tests opted out with OPENHEIM_TEST_NO_LLAMA=1")
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            pytest.fail(
                f"this test needs llama-cpp-python ({exc}); install the `local` extra "
                "(pip install -e '.[local]') or set OPENHEIM_TEST_NO_LLAMA=1",
                pytrace=False,
            )


def pytest_unconfigure(config: pytest.Config) -> None:
    # llama-cpp-python opens two /dev/null files when imported and never closes them;
    # the interpreter would report them as unclosed when it exits.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        f = getattr(utils, name, None)
        if f is not None:
            f.close()
