"""State codec: CRC32C, checksummed msgpack frames, atomic file replacement."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openheim import _core
from openheim._core import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    FRAME_VERSION,
    atomic_write,
    crc32c,
    decode_frame,
    encode_frame,
    frame_header,
)
from openheim.errors import (
    ConfigError,
    CorruptStateError,
    IncompatibleStateError,
    StorageError,
)

HERE = Path(__file__).parent


def raw_frame(
    body: bytes,
    *,
    magic: bytes = b"OHSF",
    version: int = 1,
    flags: int = 0,
    kind: int = 0,
    length: int | None = None,
) -> bytes:
    """A frame assembled from the documented layout, independently of encode_frame."""
    head = struct.pack(
        "<4sHHIQ", magic, version, flags, kind, len(body) if length is None else length
    )
    return head + struct.pack("<I", crc32c(head + body)) + body


# -- CRC32C ----------------------------------------------------------------------------

# RFC 3720 (iSCSI) appendix B.4 and the usual check value.
VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert _core._crc32c_sw(data) == expected


def test_crc32c_reports_its_implementation() -> None:
    assert _core._crc32c_impl() in {"sse4.2", "armv8-crc", "slice-by-8"}


@given(st.binary(max_size=600), st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_crc32c_hardware_and_tables_agree(data: bytes, skip: int, seed: int) -> None:
    view = memoryview(data)[min(skip, len(data)) :]  # unaligned starts too
    assert crc32c(view, seed) == _core._crc32c_sw(view, seed)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32c_continues(a: bytes, b: bytes) -> None:
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
    assert _core._crc32c_sw(b, _core._crc32c_sw(a)) == crc32c(a + b)


def test_crc32c_rejects_text_and_bad_seed() -> None:
    with pytest.raises(TypeError):
        crc32c("text")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        crc32c(b"x", -1)
    with pytest.raises(OverflowError):
        crc32c(b"x", 2**32)


# -- frames: round trips ---------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(msgpack_values, st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_round_trip_plain_values(value: Any, kind: int, flags: int) -> None:
    frame = encode_frame(value, kind=kind, flags=flags)
    assert frame[:4] == FRAME_MAGIC
    assert decode_frame(frame) == value
    header = frame_header(frame)
    assert (header.version, header.kind, header.flags) == (FRAME_VERSION, kind, flags)
    assert header.frame_length == len(frame) == FRAME_HEADER_SIZE + header.body_length
    assert frame == raw_frame(
        msgspec.msgpack.encode(value), version=FRAME_VERSION, flags=flags, kind=kind
    )


class ToolCall(msgspec.Struct):
    name: str
    arguments: dict[str, Any]


class Message(msgspec.Struct):
    role: str
    content: str
    tool_calls: list[ToolCall] | None = None


class Conversation(msgspec.Struct):
    id: str
    turn: int
    messages: list[Message]


conversations = st.builds(
    Conversation,
    id=st.text(max_size=20),
    turn=st.integers(0, 10**6),
    messages=st.lists(
        st.builds(
            Message,
            role=st.sampled_from(["system", "user", "assistant", "tool"]),
            content=st.text(max_size=200),
            tool_calls=st.none()
            | st.lists(
                st.builds(
                    ToolCall,
                    name=st.text(min_size=1, max_size=10),
                    arguments=st.dictionaries(
                        st.text(max_size=5), st.integers(-(2**63), 2**63), max_size=3
                    ),
                ),
                max_size=2,
            ),
        ),
        max_size=8,
    ),
)


@given(conversations)
def test_round_trip_struct(conv: Conversation) -> None:
    frame = encode_frame(conv, kind=7)
    assert decode_frame(frame, type=Conversation) == conv
    assert decode_frame(bytearray(frame), type=Conversation) == conv
    assert decode_frame(memoryview(frame), type=Conversation) == conv
    assert decode_frame(frame) == msgspec.to_builtins(conv)  # no type: plain values


def test_round_trip_large_body() -> None:
    value = {"blob": os.urandom(600_000), "n": list(range(1000))}
    frame = encode_frame(value)
    assert decode_frame(frame) == value


def test_decode_into_generic_and_unhashable_types() -> None:
    frame = encode_frame([1, 2, 3])
    assert decode_frame(frame, type=list[int]) == [1, 2, 3]
    assert decode_frame(frame, type=tuple[int, ...]) == (1, 2, 3)


def test_raw_bodies_keep_their_buffer_alive() -> None:
    frame = bytearray(encode_frame({"a": [1, 2]}))
    raw = decode_frame(frame, type=msgspec.Raw)
    assert msgspec.msgpack.decode(raw) == {"a": [1, 2]}


@pytest.mark.parametrize("kind", [-1, 2**32, 1.5, "x"])
def test_kind_out_of_range(kind: Any) -> None:
    with pytest.raises((ConfigError, TypeError)):
        encode_frame(1, kind=kind)


@pytest.mark.parametrize("flags", [-1, 256])
def test_flags_high_byte_is_reserved(flags: int) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        encode_frame(1, flags=flags)


def test_unencodable_object_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_frame(object())


# -- frames: every corruption class ------------------------------------------------------

SMALL = encode_frame({"role": "user", "content": "hi", "n": [1, 2, 3]}, kind=3, flags=5)


def test_every_flipped_byte_is_corruption() -> None:
    for i in range(len(SMALL)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(SMALL)
            bad[i] ^= mask
            with pytest.raises(CorruptStateError) as info:
                decode_frame(bad)
            with pytest.raises(CorruptStateError):
                frame_header(bad)
            msg = str(info.value)
            if i < 4:
                assert "bad magic" in msg
            elif 12 <= i < 20:
                assert "truncated" in msg or "trailing" in msg
            else:
                assert "checksum mismatch" in msg


def test_every_truncation_is_corruption() -> None:
    for n in range(len(SMALL)):
        with pytest.raises(CorruptStateError, match="truncated") as info:
            decode_frame(SMALL[:n])
        if n >= FRAME_HEADER_SIZE:
            body = len(SMALL) - FRAME_HEADER_SIZE
            assert f"body is {body} bytes but only {n - FRAME_HEADER_SIZE} are present" in str(
                info.value
            )


def test_trailing_bytes() -> None:
    with pytest.raises(CorruptStateError, match="3 trailing bytes"):
        decode_frame(SMALL + b"abc")
    with pytest.raises(CorruptStateError, match="trailing"):
        decode_frame(SMALL + SMALL)


def test_not_a_frame() -> None:
    with pytest.raises(CorruptStateError, match="bad magic") as info:
        decode_frame(b'{"a": 1} is json, not a frame')
    assert repr(b'{"a"') in str(info.value)
    with pytest.raises(CorruptStateError, match="bad magic"):
        decode_frame(b"xy")


@pytest.mark.parametrize("version", [FRAME_VERSION + 1, 0xFFFF, 0])
def test_other_versions_are_incompatible(version: int) -> None:
    frame = raw_frame(msgspec.msgpack.encode([1]), version=version)
    with pytest.raises(IncompatibleStateError, match=f"version {version} not supported") as info:
        decode_frame(frame)
    assert f"reads versions 1 to {FRAME_VERSION}" in str(info.value)
    with pytest.raises(IncompatibleStateError):
        frame_header(frame)


def test_unknown_format_flags_are_incompatible() -> None:
    frame = raw_frame(msgspec.msgpack.encode([1]), flags=0x0100 | 0x05)
    with pytest.raises(IncompatibleStateError, match="format features 0x0100"):
        decode_frame(frame)


def test_intact_frame_with_invalid_msgpack_body_is_corrupt() -> None:
    for body in (b"\xc1", b"\x92\x01", b"\x01\x02"):  # reserved byte, short array, extra data
        with pytest.raises(CorruptStateError, match="not valid msgpack"):
            decode_frame(raw_frame(body))


def test_schema_mismatch_is_incompatible() -> None:
    frame = encode_frame({"id": "c1", "turn": "not an int", "messages": []})
    with pytest.raises(IncompatibleStateError, match="does not match") as info:
        decode_frame(frame, type=Conversation)
    assert isinstance(info.value.__cause__, msgspec.ValidationError)
    assert decode_frame(frame)["turn"] == "not an int"


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_raise_state_errors(data: bytes) -> None:
    for blob in (data, FRAME_MAGIC + data, SMALL[:FRAME_HEADER_SIZE] + data):
        with contextlib.suppress(CorruptStateError, IncompatibleStateError):
            decode_frame(blob)


def test_frame_header_repr_and_equality() -> None:
    h = frame_header(SMALL)
    assert h == frame_header(bytes(SMALL))
    assert hash(h) == hash(frame_header(SMALL))
    assert repr(h) == f"FrameHeader(version=1, flags=5, kind=3, body_length={h.body_length})"


# -- atomic_write -------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(str(target), bytearray(b"second, longer"))
    assert target.read_bytes() == b"second, longer"
    atomic_write(os.fsencode(target), memoryview(b"3"))
    assert target.read_bytes() == b"3"
    assert os.listdir(tmp_path) == ["state.bin"]  # no temporary files left


def test_atomic_write_in_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write("plain", b"x")
    assert (tmp_path / "plain").read_bytes() == b"x"


def test_atomic_write_large(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    atomic_write(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


def test_atomic_write_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"new"


def test_atomic_write_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "state.bin"
    with pytest.raises(StorageError) as info:
        atomic_write(target, b"data")
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == target
    assert "temporary file" in str(info.value)


def test_atomic_write_failed_rename_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    (target / "child").mkdir(parents=True)
    with pytest.raises(StorageError, match="rename") as info:
        atomic_write(target, b"data")
    assert info.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert sorted(os.listdir(tmp_path)) == ["a-directory"]


def test_atomic_write_rejects_nul_in_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NUL"):
        atomic_write(str(tmp_path / "a\0b"), b"x")


def test_atomic_write_concurrent_writers_never_mix(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    seen: list[bytes] = []

    def writer(p: bytes) -> None:
        for _ in range(10):
            atomic_write(target, p)

    def reader() -> None:
        for _ in range(50):
            if target.exists():
                seen.append(target.read_bytes())

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in payloads
    assert all(s in payloads for s in seen)
    assert os.listdir(tmp_path) == ["shared"]


# -- fuzzing -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzz_decode_frame_and_log_reader(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (dev extra) has wheels for Linux x86_64 only")
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_codec.py"),
            "-max_total_time=25",
            "-timeout=10",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "OH_FUZZ_DIR": str(tmp_path)},
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "Done" in tail


# -- the GIL: released around large checksums and file writes ---------------------------------


def _other_thread_runs_during(call: Callable[[], object], attempts: int) -> bool:
    """Whether another Python thread ran bytecode while ``call()`` was executing.

    A counter thread wakes every half millisecond to count. With the switch
    interval at 1000 s this thread never hands over the GIL between bytecodes,
    so the counter can move between ``before`` and ``after`` only if ``call``
    itself released the GIL. Tried ``attempts`` times (the OS may not schedule
    the counter thread during one short call); no timing is asserted.
    """
    count = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=counter, daemon=True)
    old = sys.getswitchinterval()
    thread.start()
    sys.setswitchinterval(1000.0)
    try:
        for _ in range(attempts):
            time.sleep(0.002)  # releases the GIL: the counter thread gets going
            before = count
            call()
            if count != before:
                return True
        return False
    finally:
        sys.setswitchinterval(old)
        stop.set()
        thread.join()


def test_the_gil_probe_sees_a_call_that_holds_the_gil() -> None:
    # The control: the portable CRC path never releases the GIL, so the probe must say so.
    data = os.urandom(8 << 20)
    assert not _other_thread_runs_during(lambda: _core._crc32c_sw(data), attempts=3)


def test_crc32c_large_buffer_releases_the_gil() -> None:
    data = os.urandom(64 << 20)
    assert _other_thread_runs_during(lambda: crc32c(data), attempts=50)
    assert crc32c(data) == _core._crc32c_sw(data)
    assert crc32c(bytearray(data[: 1 << 20])) == crc32c(memoryview(data)[: 1 << 20])


def test_frames_check_large_bodies_without_the_gil() -> None:
    payload = os.urandom(32 << 20)
    frame = encode_frame(payload)
    assert _other_thread_runs_during(lambda: encode_frame(payload), attempts=50)
    assert _other_thread_runs_during(lambda: decode_frame(frame), attempts=50)
    assert decode_frame(frame) == payload


def test_atomic_write_releases_the_gil(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    target = tmp_path / "big"
    assert _other_thread_runs_during(lambda: atomic_write(target, data), attempts=20)
    assert target.read_bytes() == data
