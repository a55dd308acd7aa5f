"""llama.cpp's CPU threads sleep between decodes unless the environment says otherwise.

openheim sets OpenMP's passive wait before llama_cpp loads libgomp (which reads
it once); a choice already in the environment wins, and once llama_cpp was
imported first nothing is assumed. The engine's default sampling threads
follow: every core when llama.cpp's threads sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.llama

_PROBE = """
import json, os, sys
if sys.argv[1] == "llama-first":
    import llama_cpp  # noqa: F401
import openheim.models._llama as m
print(json.dumps([os.environ.get("OMP_WAIT_POLICY"), m.llama_threads_sleep()]))
"""


def _probe(mode: str, policy: str | None) -> list[object]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_passive_wait_is_chosen_before_llama_cpp_loads() -> None:
    assert _probe("openheim-first", None) == ["passive", True]


def test_a_policy_in_the_environment_wins() -> None:
    assert _probe("openheim-first", "active") == ["active", False]
    assert _probe("openheim-first", "PASSIVE") == ["PASSIVE", True]


def test_nothing_is_assumed_when_llama_cpp_was_loaded_first() -> None:
    assert _probe("llama-first", None) == [None, False]
    assert _probe("llama-first", "passive") == ["passive", True]


def test_default_sampling_threads_use_every_core_when_llama_threads_sleep(
    tiny_gguf: object,
) -> None:
    from openheim.models._llama import llama_threads_sleep
    from openheim.models.llama import LlamaModel

    cores = os.cpu_count() or 1
    # llama.cpp takes every core: only a sleeping pool leaves them to sampling
    model = LlamaModel(str(tiny_gguf), n_ctx=256, n_parallel=2, n_threads=cores)
    try:
        want = min(8, cores) if llama_threads_sleep() else 1
        assert model.engine.sample_threads == want
    finally:
        model.close()
