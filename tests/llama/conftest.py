"""Fixtures for the local-model tests: a tiny random-weight GGUF made on the spot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_base_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "base.gguf", chat_template=None)


@pytest.fixture(scope="module")
def llama_model(tiny_gguf: Path) -> Iterator[object]:
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_gguf), n_ctx=2048, n_parallel=4, n_batch=256, n_threads=2)
    yield model
    model.close()
