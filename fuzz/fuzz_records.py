"""atheris fuzz target: the stores' records (checkpoints, sessions, event batches).

    python fuzz/fuzz_records.py -runs=1000000

The frame and raw log decoders of the core have their own target
(tests/core/fuzz_codec.py). This one covers what the stores build on them:
``decode_checkpoint`` / ``decode_session`` (typed decode, format migrations),
``replay`` of a decoded log, and the event log's batch and meta records.
Arbitrary bytes, frames around an arbitrary msgpack body (every kind and
format version, so the migrations run on hostile bodies), and valid records
with bytes changed must raise only ``CorruptStateError`` /
``IncompatibleStateError``, never anything else.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import msgspec

from openheim._core import encode_frame
from openheim.errors import CorruptStateError, IncompatibleStateError
from openheim.messages import Message
from openheim.snapshot import (
    KIND_DELTA,
    KIND_SESSION,
    KIND_SNAPSHOT,
    RunCheckpoint,
    SessionRecord,
    decode_checkpoint,
    decode_session,
    encode_checkpoint,
    encode_session,
    replay,
)

STATE_ERRORS = (CorruptStateError, IncompatibleStateError)
KINDS = (KIND_SNAPSHOT, KIND_DELTA, KIND_SESSION, 0, 7, 255)


def _samples() -> list[bytes]:
    msgs = [Message(role="user", content="hi"), Message(role="assistant", content="hello")]
    out = []
    for make in (
        lambda: encode_session(SessionRecord(messages=msgs)),
        lambda: encode_checkpoint(RunCheckpoint(run_id="r1", messages=msgs), snapshot=True),
        lambda: encode_checkpoint(RunCheckpoint(run_id="r1", messages=msgs[1:]), snapshot=False),
    ):
        try:
            out.append(make())
        except TypeError:  # a record's required fields changed: fuzz what still builds
            continue
    return out


VALID = _samples()


def _decode_all(blob: bytes) -> None:
    decoded: list[tuple[bool, RunCheckpoint]] = []
    try:
        decoded.append(decode_checkpoint(blob))
    except STATE_ERRORS as exc:
        assert str(exc)  # noqa: PT017
    try:
        rec = decode_session(blob)
        assert isinstance(rec, SessionRecord)
    except STATE_ERRORS as exc:
        assert str(exc)  # noqa: PT017
    if decoded:
        with contextlib.suppress(STATE_ERRORS):
            replay(decoded)


def _events(blob: bytes) -> None:
    from openheim.stores import events

    for name in ("_decode_batch", "_decode_meta"):
        # RunEventLog turns a DecodeError into CorruptStateError naming the key.
        with contextlib.suppress(msgspec.DecodeError):
            getattr(events, name)(blob)


def _body(data: bytes) -> Any:
    """A msgpack body from the fuzzer's bytes (or the bytes themselves when not msgpack)."""
    try:
        return msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad str
        return {
            "v": data[0] % 5 if data else 1,
            "messages": [{"role": "user", "content": data.hex()}],
        }


def check(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        _decode_all(rest)
        _events(rest)
    elif mode == 1:
        body = _body(rest[1:])
        kind = KINDS[rest[0] % len(KINDS)] if rest else KIND_SESSION
        try:
            blob = encode_frame(body, kind=kind)
        except (TypeError, ValueError, OverflowError):
            return
        _decode_all(blob)
    elif mode == 2 and VALID:
        blob = bytearray(VALID[rest[0] % len(VALID)] if rest else VALID[0])
        for i, b in enumerate(rest[1:]):
            blob[(i * 7 + b) % len(blob)] ^= b
        _decode_all(bytes(blob))
    else:
        records: list[tuple[bool, RunCheckpoint]] = []
        for i in range(0, len(rest), 16):
            body = _body(rest[i : i + 16])
            try:
                blob = encode_frame(body, kind=KIND_SNAPSHOT if i % 32 == 0 else KIND_DELTA)
                records.append(decode_checkpoint(blob))
            except STATE_ERRORS:
                continue
            except (TypeError, ValueError, OverflowError):
                continue
        if records:
            with contextlib.suppress(STATE_ERRORS):
                replay(records)


def main() -> None:
    import atheris

    atheris.instrument_func(check)
    with atheris.instrument_imports():
        import openheim.snapshot
        import openheim.stores.events  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
