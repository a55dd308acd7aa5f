"""Bugs the fuzzers found, pinned: each raised an undocumented exception before."""

from __future__ import annotations

from pathlib import Path

import pytest

from openheim._core import encode_frame
from openheim.config import load_config
from openheim.errors import ConfigError, CorruptStateError
from openheim.snapshot import KIND_SESSION, KIND_SNAPSHOT, decode_checkpoint, decode_session


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "openheim.toml"
    path.write_bytes(b'[agents.a]\nmodel = "openai:x"\ninstructions = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"openheim.toml:3: the config file is not UTF-8") as e:
        load_config(path)
    assert "0xe9" in str(e.value)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (KIND_SNAPSHOT, {"v": 1}),  # a format-1 run record with none of its fields
        (KIND_SNAPSHOT, {"v": 1, "agent": "a"}),
    ],
)
def test_an_old_format_record_missing_its_fields_is_corrupt_not_a_crash(
    kind: int, body: dict[str, object]
) -> None:
    blob = encode_frame(body, kind=kind)
    decode = decode_session if kind == KIND_SESSION else decode_checkpoint
    with pytest.raises(CorruptStateError, match="restore it from a backup or delete it"):
        decode(blob, "record 'x'")
