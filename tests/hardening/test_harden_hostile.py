"""Hostile input, CI scale, against one served project on SQLite: what gets through is 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import soak_hostile as hostile
from soaklib import Served, start_server, stop_server


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def served(work: Path) -> Iterator[Served]:
    config, env = hostile.project(work)
    s = start_server(config, env=env)
    yield s
    stop_server(s)


def _none_through(res: dict[str, object]) -> None:
    assert res["through"] == 0, res["samples"]
    assert isinstance(res["tried"], int)
    assert res["tried"] > 0


def test_oversized_nested_and_invalid_bodies(served: Served) -> None:
    _none_through(hostile.bodies(served, scale=0))


def test_injection_in_tool_arguments(served: Served) -> None:
    _none_through(hostile.tool_injection(served))


def test_path_traversal_everywhere_ids_and_references_go(served: Served, work: Path) -> None:
    _none_through(hostile.traversal(served, work))


def test_cross_tenant_access_on_every_route(served: Served) -> None:
    _none_through(hostile.cross_tenant(served))


def test_schemathesis_short_run(served: Served, work: Path) -> None:
    res = hostile.schemathesis_run(served, examples=3, work=work)
    if res.get("skipped"):
        pytest.skip(str(res["skipped"]))
    assert res["returncode"] == 0, res["tail"]
    assert res["through"] == 0
