"""atheris fuzz target: state frames and the append-only log.

Run standalone (atheris is in the dev extra)::

    python tests/core/fuzz_codec.py -max_total_time=60

Properties checked on every input:
- decode_frame / frame_header on arbitrary bytes raise only CorruptStateError or
  IncompatibleStateError, and a frame they accept is exactly as long as it says;
- a valid frame with any bytes changed is rejected as corrupt;
- LogReader on arbitrary file contents either rejects the file header with a
  state error or yields records that re-frame to exactly the valid prefix it
  reports, with ``valid_length + truncated_bytes`` equal to the file size;
- LogWriter opening the same file recovers the same records and appends after them.

The compiled core is not built with libFuzzer instrumentation, so the harness
is: it branches on which outcome the C code reached (each rejection reason, how
a log ended), which gives the fuzzer feedback to steer by.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from openheim._core import (
        FRAME_HEADER_SIZE,
        FRAME_MAGIC,
        LogReader,
        LogWriter,
        crc32c,
        decode_frame,
        encode_frame,
        frame_header,
        read_log,
    )
    from openheim.errors import CorruptStateError, IncompatibleStateError

STATE_ERRORS = (CorruptStateError, IncompatibleStateError)
VALID = encode_frame(
    {"messages": [{"role": "user", "content": "hello"}], "turn": 3, "blob": b"\x00\xff"},
    kind=2,
    flags=1,
)
# libFuzzer ends the process from C, so nothing runs at exit: the harness
# deletes its files after every input and reuses one directory.
_SHM = "/dev/shm"
TMP = os.environ.get("OH_FUZZ_DIR") or os.path.join(
    _SHM if os.path.isdir(_SHM) else tempfile.gettempdir(), "openheim-fuzz"
)
os.makedirs(TMP, exist_ok=True)
LOG = os.path.join(TMP, f"log-{os.getpid()}")


def _fresh_log_header() -> bytes:
    path = LOG + ".header"
    LogWriter(path, sync=False).close()
    with open(path, "rb") as f:
        head = f.read()
    os.unlink(path)
    return head


LOG_HEADER = _fresh_log_header()


def record(payload: bytes) -> bytes:
    size = struct.pack("<I", len(payload))
    return size + struct.pack("<I", crc32c(size + payload)) + payload


REASONS = (
    "bad magic",
    "trailing",
    "checksum",
    "truncated",
    "not supported",
    "format features",
    "not valid msgpack",
    "cut short",
    "claims",
    "fails its checksum",
    "not an openheim log",
    "log header",
    "creation",
)


@atheris.instrument_func
def outcome(message: str) -> int:
    """Which rejection the C code reached (a branch per reason, for coverage)."""
    for i, reason in enumerate(REASONS):
        if reason in message:
            return i
    raise AssertionError(f"an error message names no known reason: {message}")


@atheris.instrument_func
def check_frame(blob: bytes) -> None:
    try:
        decode_frame(blob)
    except STATE_ERRORS as exc:
        outcome(str(exc))
        try:
            frame_header(blob)
        except STATE_ERRORS:
            return
        return  # the header is fine; only the body failed to decode
    assert frame_header(blob).frame_length == len(blob)


@atheris.instrument_func
def check_mutated_frame(mask: bytes) -> None:
    blob = bytearray(VALID)
    for i, m in enumerate(mask[: len(blob)]):
        blob[i] ^= m
    if bytes(blob) == VALID:
        decode_frame(blob)
        return
    try:
        decode_frame(blob)
    except CorruptStateError:
        return
    raise AssertionError(f"a damaged frame was accepted: {bytes(blob)!r}")


def check_log(content: bytes, with_writer: bool) -> None:
    try:
        _check_log(content, with_writer)
    finally:
        if os.path.exists(LOG):
            os.unlink(LOG)


@atheris.instrument_func
def _check_log(content: bytes, with_writer: bool) -> None:
    with open(LOG, "wb") as f:
        f.write(content)
    try:
        reader = LogReader(LOG)
        records = list(reader)
    except STATE_ERRORS as exc:
        outcome(str(exc))
        try:
            LogWriter(LOG, sync=False).close()
        except type(exc):
            pass
        else:
            raise AssertionError("the writer accepted a log header the reader rejected") from None
        with open(LOG, "rb") as f:
            assert f.read() == content, "a refused log was modified"
        return
    assert reader.valid_length + reader.truncated_bytes == len(content)
    if reader.valid_length:
        rebuilt = LOG_HEADER + b"".join(record(r) for r in records)
        assert len(rebuilt) == reader.valid_length
        assert content.startswith(rebuilt)
    else:
        assert records == []
    assert (reader.tail_error is None) == (reader.truncated_bytes == 0)
    if reader.tail_error is not None:
        outcome(reader.tail_error)
    if len(records) > 3:
        pass  # more records than the seed log: a branch worth reaching
    if with_writer:
        w = LogWriter(LOG, sync=False)
        assert w.recovered_records == len(records)
        assert w.repaired_bytes == reader.truncated_bytes
        w.append(b"after")
        w.close()
        assert read_log(LOG) == [*records, b"after"]


@atheris.instrument_func
def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 5)
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 0:
        check_frame(rest)
    elif mode == 1:
        check_frame(FRAME_MAGIC + rest)
    elif mode == 2:
        check_frame(VALID[:FRAME_HEADER_SIZE] + rest)
    elif mode == 3:
        check_mutated_frame(rest)
    elif mode == 4:
        check_log(rest, with_writer=len(rest) % 8 == 0)
    else:
        valid = LOG_HEADER + record(b"one") + record(b"") + record(b"three")
        check_log(valid + rest, with_writer=len(rest) % 8 == 0)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
