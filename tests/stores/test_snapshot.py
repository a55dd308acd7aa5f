"""Checkpoint records: round trips, deltas and compaction, retention, corruption, migration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from openheim.agent import Approval, PendingApproval, RunState
from openheim.errors import CorruptStateError, IncompatibleStateError
from openheim.messages import Message, ToolCall, Usage
from openheim.snapshot import (
    FORMAT_VERSION,
    KIND_SNAPSHOT,
    RunCheckpoint,
    checkpoint_of,
    decode_checkpoint,
    decode_session,
    encode_checkpoint,
    replay,
    state_of,
)
from openheim.stores import Checkpointer, Store, open_store

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def _state(n: int = 0) -> RunState:
    state = RunState(run_id="r1", agent="a", session="s", messages=[Message.user("go")])
    for i in range(n):
        state.messages.append(Message.assistant(None, [ToolCall("t", {"i": i}, f"c{i}")]))
        state.messages.append(Message.tool(f"c{i}", "t", f"result {i}"))
    return state


def test_round_trip_keeps_everything() -> None:
    state = _state(2)
    state.usage = Usage(10, 5, 3)
    state.pending = [PendingApproval("c9", "rm", {"path": "/x"})]
    state.completed = {"c8": Message.tool("c8", "ls", "a b")}
    cp = checkpoint_of(state, "paused", 0, user_state={"step": 3})
    snap, back = decode_checkpoint(encode_checkpoint(cp, snapshot=True))
    assert snap is True
    assert back == cp
    assert back.v == FORMAT_VERSION
    delta = checkpoint_of(state, "running", 3)
    snap, back = decode_checkpoint(encode_checkpoint(delta, snapshot=False))
    assert snap is False
    assert back.base == 3
    assert back.messages == state.messages[3:]


def test_replay_folds_deltas_and_detects_gaps() -> None:
    state = _state(0)
    records = [(True, checkpoint_of(state, "running", 0))]
    for i in range(3):
        base = len(state.messages)
        state.messages.append(Message.user(f"m{i}"))
        records.append((False, checkpoint_of(state, "running", base)))
    assert replay(records).messages == state.messages
    with pytest.raises(CorruptStateError, match="missing"):
        replay([records[0], records[2]])
    with pytest.raises(CorruptStateError, match="no snapshot"):
        replay(records[1:])


def _plain(value: Any, path: str = "body") -> None:
    """Fail unless ``value`` is plain msgpack data (no extension types, no opaque blobs)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{path}: key {k!r}"
            _plain(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _plain(v, f"{path}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{path}: {value!r}"


def test_never_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from openheim._core import FRAME_HEADER_SIZE

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    for name in ("dumps", "dump", "loads", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    state = _state(2)
    state.pending = [PendingApproval("c9", "rm", {"path": "/x"})]
    state.decisions = {"c9": Approval(False, "no")}
    state.history = [Message.user("earlier")]
    cp = checkpoint_of(state, "paused", 0, user_state={"step": 3, "tags": ["a"], "ratio": 0.5})
    cp = msgspec.structs.replace(cp, at=1700000000.0)  # fixed bytes: the scan below is exact
    data = encode_checkpoint(cp, snapshot=True)
    # The body is plain msgpack: exactly the record's fields as maps, lists and scalars.
    body = msgspec.msgpack.decode(data[FRAME_HEADER_SIZE:])
    _plain(body)
    assert body == msgspec.to_builtins(cp)
    assert body["state"]["messages"][1]["tool_calls"][0] == {
        "name": "t",
        "arguments": {"i": 0},
        "id": "c0",
    }
    assert decode_checkpoint(data) == (True, cp)
    # No pickle stream anywhere: one starts with PROTO (0x80) and a protocol number.
    for proto in range(2, 6):
        assert bytes([0x80, proto]) not in data
    # State that only pickle could store is refused, not pickled.
    for opaque in (object(), lambda: None, Path("/tmp")):
        bad = checkpoint_of(_state(0), "running", 0, user_state=opaque)
        with pytest.raises(TypeError):
            encode_checkpoint(bad, snapshot=True)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_records_raise_naming_where(damage: str) -> None:
    data = bytearray(encode_checkpoint(checkpoint_of(_state(2), "running", 0), snapshot=True))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[40] ^= 0x01
    elif damage == "garbage":
        data = bytearray(b"not a frame at all, just text")
    else:
        data = bytearray()
    with pytest.raises(CorruptStateError, match="checkpoint 7 of run 'r1'"):
        decode_checkpoint(bytes(data), "checkpoint 7 of run 'r1'")


def test_a_newer_format_is_incompatible() -> None:
    from openheim._core import encode_frame

    body = msgspec.structs.asdict(checkpoint_of(_state(), "running", 0))
    body["v"] = FORMAT_VERSION + 1
    body["run_id"] = 5  # a layout we do not know
    with pytest.raises(IncompatibleStateError, match="upgrade openheim"):
        decode_checkpoint(encode_frame(body, kind=KIND_SNAPSHOT), "x")


def test_migrates_the_checked_in_v1_run_snapshot() -> None:
    with open(os.path.join(FIXTURES, "run_snapshot_v1.ohsf"), "rb") as f:
        data = f.read()
    snap, cp = decode_checkpoint(data, "fixture")
    assert snap is True
    assert cp.v == FORMAT_VERSION
    assert cp.run_id == "run-v1"
    assert cp.agent == "calc"
    assert cp.session == "s1"
    assert cp.status == "running"
    assert cp.state.usage == Usage(30, 7, 2)
    assert cp.state.iterations == 2
    assert [m.role for m in cp.messages] == ["user", "assistant", "tool"]
    assert cp.messages[1].tool_calls == [ToolCall("add", {"a": 2, "b": 3}, "c1")]
    assert cp.messages[2].tool_call_id == "c1"


def test_migrates_the_checked_in_v2_snapshot_and_delta() -> None:
    """Format 2 copied the run state's fields; format 3 embeds the RunState."""
    with open(os.path.join(FIXTURES, "run_snapshot_v2.ohsf"), "rb") as f:
        snap_bytes = f.read()
    with open(os.path.join(FIXTURES, "run_delta_v2.ohsf"), "rb") as f:
        delta_bytes = f.read()
    snap, cp = decode_checkpoint(snap_bytes, "fixture")
    assert snap is True
    assert cp.v == FORMAT_VERSION
    assert cp.status == "paused"
    assert cp.user_state == {"step": 1}
    assert cp.at == 1700000000.0
    state = cp.state
    assert (state.run_id, state.agent, state.session) == ("run-v2", "ops", "s2")
    assert state.usage == Usage(12, 4, 1)
    assert state.iterations == 1
    assert state.tool_retries == {"rm": 1}
    assert state.pending == [PendingApproval("c1", "rm", {"path": "/tmp/x"})]
    assert state.decisions == {"c1": Approval(False, "not now")}
    assert state.messages[1].tool_calls == [ToolCall("rm", {"path": "/tmp/x"}, "c1")]
    is_snap, delta = decode_checkpoint(delta_bytes, "fixture delta")
    assert is_snap is False
    assert delta.base == 2
    assert delta.state.run_id == ""
    full = replay([(snap, cp), (is_snap, delta)])
    assert full.state.run_id == "run-v2"
    assert [m.role for m in full.state.messages] == ["user", "assistant", "tool"]
    assert full.state.messages[2].content == "rejected"
    assert state_of(full).pending == []  # the delta's own (settled) scalar state wins


def test_migrates_the_checked_in_v1_session() -> None:
    with open(os.path.join(FIXTURES, "session_v1.ohsf"), "rb") as f:
        record = decode_session(f.read(), "fixture")
    assert [m.content for m in record.messages] == ["hi", "hello"]
    assert record.runs == []


async def test_checkpointer_compacts_and_keeps_storage_linear(tmp_path: object) -> None:
    store = open_store(f"sqlite://{tmp_path}/s.db")
    ckpt = Checkpointer(store, snapshot_every=8, keep=2)
    state = _state()
    sizes = []
    for i in range(200):
        state.messages.append(Message.user(f"message number {i} " + "x" * 50))
        await ckpt.save(state)
        sizes.append(await ckpt.stored_bytes("r1"))
    message_bytes = len(msgspec.msgpack.encode(state.messages))
    assert sizes[-1] <= 3 * message_bytes
    # Linear: the kept bytes track the messages, they do not pile up per checkpoint.
    assert max(sizes) <= 3 * message_bytes
    records = await store.read_log("run/r1")
    assert len(records) <= 2 * 8 + 1
    loaded = await Checkpointer(store).load("r1")
    assert loaded is not None
    assert loaded.messages == state.messages
    await store.aclose()


async def test_retention_keeps_the_last_k_checkpoints_restorable(store: Store) -> None:
    ckpt = Checkpointer(store, snapshot_every=2, keep=3)
    state = _state()
    seqs = []
    for i in range(12):
        state.messages.append(Message.user(f"m{i}"))
        seqs.append(await ckpt.save(state))
    kept = [s for s, _ in await store.read_log("run/r1")]
    assert set(seqs[-3:]) <= set(kept)
    assert len(kept) < len(seqs)
    decoded = [decode_checkpoint(r) for _, r in await store.read_log("run/r1")]
    assert decoded[0][0] is True  # the kept records start at a snapshot
    cp = await Checkpointer(store).load("r1")
    assert cp is not None
    assert cp.messages == state.messages


async def test_a_corrupt_checkpoint_row_names_its_run_and_others_load(store: Store) -> None:
    ckpt = Checkpointer(store)
    good, bad = _state(1), _state(1)
    bad.run_id = "broken"
    await ckpt.save(good)
    await ckpt.save(bad)
    bad.messages.append(Message.user("more"))
    await ckpt.save(bad)
    # Rewrite the broken run's log with its delta cut short.
    records = await store.read_log("run/broken")
    await store.delete_log("run/broken")
    await store.append("run/broken", records[0][1])
    await store.append("run/broken", records[1][1][:-5])
    with pytest.raises(CorruptStateError, match=r"checkpoint 2 of run 'broken' \(log 'run/broken'"):
        await Checkpointer(store).load("broken")
    cp = await Checkpointer(store).load("r1")
    assert cp is not None
    assert cp.messages == good.messages
    assert sorted(await ckpt.runs()) == ["broken", "r1"]


def test_checkpoint_struct_has_a_version_field() -> None:
    from openheim._core import decode_frame

    assert "v" in RunCheckpoint.__struct_fields__
    # Written in every record, even at its default (format 2 left it out).
    for snap, base in ((True, 0), (False, 1)):
        body = decode_frame(
            encode_checkpoint(checkpoint_of(_state(1), "running", base), snapshot=snap)
        )
        assert body["v"] == FORMAT_VERSION


def test_checkpoints_embed_the_run_state_and_the_records_live_in_the_state_layer() -> None:
    import openheim.agent.result as result
    import openheim.snapshot as snapshot

    assert RunCheckpoint.__struct_fields__ == ("v", "state", "status", "base", "user_state", "at")
    assert RunState is snapshot.RunState is result.RunState
    assert PendingApproval is snapshot.PendingApproval
    assert Approval is snapshot.Approval
    cp = checkpoint_of(_state(2), "running", 0)
    assert cp.state == _state(2)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_snapshot_files_name_the_file(tmp_path: Path, damage: str) -> None:
    from openheim.snapshot import read_snapshot_file, write_snapshot_file

    good, bad = tmp_path / "good.ohsf", tmp_path / "bad.ohsf"
    write_snapshot_file(good, _state(2), user_state={"k": 1})
    write_snapshot_file(bad, _state(3))
    data = bytearray(bad.read_bytes())
    if damage == "truncate":
        data = data[:-7]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = bytearray()
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptStateError, match=r"bad\.ohsf"):
        read_snapshot_file(bad)
    cp = read_snapshot_file(good)
    assert cp.messages == _state(2).messages
    assert cp.user_state == {"k": 1}


async def test_a_corrupt_sqlite_row_is_reported_and_other_rows_served(tmp_path: Path) -> None:
    import sqlite3

    from openheim.stores import StoreHistory

    path = tmp_path / "s.db"
    store = open_store(f"sqlite://{path}")
    history = StoreHistory(store)
    await history.append("ok", [Message.user("fine")])
    await history.append("broken", [Message.user("soon damaged")])
    await store.aclose()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE oh_kv SET value = substr(value, 1, 20) WHERE key = 'session/broken'")
    conn.commit()
    conn.close()
    store = open_store(f"sqlite://{path}")
    history = StoreHistory(store)
    with pytest.raises(CorruptStateError, match="session/broken"):
        await history.load("broken")
    assert [m.content for m in await history.load("ok")] == ["fine"]
    await store.aclose()
