"""Fixtures for the CLI, REPL, HTTP and gRPC tests (helpers live in ixhelpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import Served, start_server, stop_server, write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = write_project(tmp_path_factory.mktemp("served"))
    served = start_server(config)
    yield served
    stop_server(served)
