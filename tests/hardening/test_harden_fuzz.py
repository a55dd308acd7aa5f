"""Fuzz targets, CI scale: each target's property check on hypothesis-made inputs, and a
short atheris run of each when atheris is installed (the soak runs 1M executions each)."""

from __future__ import annotations

import importlib.util

import fuzz_run
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHECKS = {}
for _name in ("fuzz_sse", "fuzz_records", "fuzz_config"):
    CHECKS[_name] = importlib.import_module(_name).check


@pytest.mark.parametrize("target", sorted(CHECKS))
def test_target_properties_hold_on_generated_inputs(target: str) -> None:
    check = CHECKS[target]

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.binary(max_size=1024))
    def fuzz(data: bytes) -> None:
        check(data)

    fuzz()


def test_known_inputs_of_each_target() -> None:
    """Seeds that reach the interesting branches (and once found bugs)."""
    CHECKS["fuzz_sse"](
        b"\x05\x01\x00\x00\x00\x00\x00\x00data: a\r\n\r\nid: 1\x00\nretry: 12\n\ndata:\n\n"
    )
    CHECKS["fuzz_records"](b"\x01\x02" + b"\x81\xa1v\x01")  # a session frame in format 1
    CHECKS["fuzz_records"](b"\x01\x00" + b"\x82\xa1v\x01\xa8messages\x91\xc0")
    CHECKS["fuzz_config"](b"\x01" + b"\x00".join([b"acme", b"\x01", b"http://x", b"E"]))
    CHECKS["fuzz_config"](b"\x00[agents]\nx = 1\n")


@pytest.mark.skipif(not fuzz_run.have_atheris(), reason="atheris is not installed")
@pytest.mark.parametrize("target", sorted(fuzz_run.TARGETS))
def test_atheris_short_run(target: str, tmp_path: object) -> None:
    res = fuzz_run.run_all(2000, "atheris", artifacts=tmp_path, only=[target])  # type: ignore[arg-type]
    (r,) = res.values()
    assert r["crashes"] == 0, r["detail"]
    assert r["execs"] >= 2000
