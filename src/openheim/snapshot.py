"""The records the state layer stores: run state, approvals, sessions, checkpoints.

:class:`RunState` (with :class:`PendingApproval` and :class:`Approval`) is
everything a run needs to continue; the agent loop fills it, the checkpointer
stores it. These records live here, below the agents, so that the state
layer never imports the agent layer.

Every record is a frame (magic, frame version, kind, length, CRC32C; see
:func:`openheim._core.encode_frame`) around a msgspec-msgpack body that
carries its own *format version* ``v``. Reading checks the frame, then brings
an older body up to :data:`FORMAT_VERSION` through :data:`MIGRATIONS` (one
function per version step, on the decoded dict), then converts it to the
current struct. Nothing here uses pickle: a record decodes to plain data.

A run's checkpoints are a log of :class:`RunCheckpoint` records: a *snapshot*
(``KIND_SNAPSHOT``, every message of the run) or a *delta* (``KIND_DELTA``,
only the messages added since the previous record, with ``base`` = how many
came before them). Each record embeds the run's :class:`RunState`, holding
only those messages; the scalar state (usage, counters, pending approvals,
completed tool results) is small and is repeated in full in every record.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from openheim._core import atomic_write, decode_frame, encode_frame, frame_header
from openheim.errors import (
    ApprovalError,
    ConfigError,
    CorruptStateError,
    IncompatibleStateError,
)
from openheim.messages import Message, Usage

__all__ = [
    "FORMAT_VERSION",
    "KIND_DELTA",
    "KIND_SESSION",
    "KIND_SNAPSHOT",
    "MIGRATIONS",
    "Approval",
    "PendingApproval",
    "RunCheckpoint",
    "RunState",
    "RunStatus",
    "SessionRecord",
    "checkpoint_of",
    "decode_checkpoint",
    "decode_session",
    "encode_checkpoint",
    "encode_session",
    "new_run_id",
    "read_snapshot_file",
    "replay",
    "state_of",
    "valid_run_id",
    "write_snapshot_file",
]

FORMAT_VERSION = 3
"""The body format this build writes; older ones are migrated when read."""

# Frame kinds: "OH" + a small number, so a stray frame of another kind is recognised.
KIND_SNAPSHOT = 0x4F480101
KIND_DELTA = 0x4F480102
KIND_SESSION = 0x4F480201

RunStatus = Literal["running", "paused", "done"]

# Run ids: random per process (so ids from different processes do not collide),
# then a counter (a syscall per run would cost more than the rest of the id).
_RUN_PREFIX = "run-" + os.urandom(6).hex() + "-"
_run_numbers = itertools.count(1)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def new_run_id() -> str:
    """A fresh run id, unique across processes: ``run-<12 hex digits>-<counter>``.

    The one scheme for every run: the agent's, its checkpoints' and the server's.
    """
    return _RUN_PREFIX + str(next(_run_numbers))


def valid_run_id(run_id: str) -> str:
    """``run_id`` if it can name a run (ConfigError saying what is allowed otherwise).

    1 to 128 characters: letters, digits and ``. _ : -``, starting with a
    letter or digit; so it is safe in store keys, log names and URL paths.
    """
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        raise ConfigError(
            f"invalid run id {run_id!r}: use 1 to 128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit (or leave run_id out for a generated one)"
        )
    return run_id


class PendingApproval(msgspec.Struct, frozen=True):
    """A tool call waiting for approval: its call ``id``, ``tool`` name and ``arguments``."""

    id: str
    tool: str
    arguments: dict[str, Any]


class Approval(msgspec.Struct, frozen=True):
    """A decision on a pending call; a rejection's ``reason`` is shown to the model."""

    approved: bool
    reason: str | None = None


class RunState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything a paused or interrupted run needs to continue (encodable with msgspec)."""

    run_id: str
    agent: str
    session: str | None = None
    messages: list[Message] = msgspec.field(default_factory=list)  # this run's, prompt first
    usage: Usage = msgspec.field(default_factory=Usage)
    iterations: int = 0
    output_retries: int = 0
    tool_retries: dict[str, int] = msgspec.field(default_factory=dict)
    pending: list[PendingApproval] = msgspec.field(default_factory=list)
    # Results of the paused turn's calls that did not need approval, by call id.
    completed: dict[str, Message] = msgspec.field(default_factory=dict)
    decisions: dict[str, Approval] = msgspec.field(default_factory=dict)
    # The conversation a run without a session continues (``message_history=``).
    history: list[Message] = msgspec.field(default_factory=list)

    def decide(self, call_id: str, approval: Approval) -> None:
        """Record a decision on a pending call (ApprovalError if unknown or already decided)."""
        if not any(p.id == call_id for p in self.pending):
            known = ", ".join(p.id for p in self.pending) or "none"
            raise ApprovalError(
                f"no pending tool call {call_id!r} in run {self.run_id!r} (pending: {known})"
            )
        if call_id in self.decisions:
            verb = "approved" if self.decisions[call_id].approved else "rejected"
            raise ApprovalError(f"tool call {call_id!r} was already {verb}")
        self.decisions[call_id] = approval


class RunCheckpoint(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One checkpoint of a run: a full snapshot or a delta (see the module docstring).

    ``state`` is the run's :class:`RunState` with its messages from index
    ``base`` on (all of them in a snapshot); a delta leaves the run's id,
    agent and session empty, the snapshot before it holds them.
    """

    v: int  # required, so it is always written (format 2 left it out: see _decode)
    state: RunState
    status: RunStatus = "running"
    base: int = 0
    user_state: Any = None
    at: float = 0.0  # wall-clock time of the checkpoint (epoch seconds)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def agent(self) -> str:
        return self.state.agent

    @property
    def session(self) -> str | None:
        return self.state.session

    @property
    def messages(self) -> list[Message]:
        return self.state.messages


class SessionRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A session's conversation, its usage, and the ids of the runs already added."""

    v: int  # required, so it is always written (format 2 left it out: see _decode)
    messages: list[Message] = msgspec.field(default_factory=list)
    usage: Usage = msgspec.field(default_factory=Usage)
    runs: list[str] = msgspec.field(default_factory=list)  # newest last, bounded
    updated: float = 0.0


def _run_v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    """Format 1 named fields differently, kept usage as three counters and had no deltas."""
    pending = body.get("pending") or []
    return {
        "v": 2,
        "run_id": body["run"],
        "agent": body["agent"],
        "session": body.get("session"),
        "status": "done" if body.get("done") else ("paused" if pending else "running"),
        "base": 0,
        "messages": body.get("msgs") or [],
        "usage": {
            "input_tokens": body.get("tokens_in", 0),
            "output_tokens": body.get("tokens_out", 0),
            "requests": body.get("requests", 0),
        },
        "iterations": body.get("iterations", 0),
        "pending": pending,
    }


def _session_v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    return {"v": 2, "messages": body.get("msgs") or [], "runs": [], "updated": 0.0}


_RUN_STATE_FIELDS = (
    "run_id",
    "agent",
    "session",
    "messages",
    "usage",
    "iterations",
    "output_retries",
    "tool_retries",
    "pending",
    "completed",
    "decisions",
)


def _run_v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
    """Format 2 copied the run state's fields into the checkpoint; format 3 embeds a RunState."""
    state = {k: body[k] for k in _RUN_STATE_FIELDS if k in body}
    state.setdefault("run_id", "")
    state.setdefault("agent", "")
    out = {k: v for k, v in body.items() if k not in _RUN_STATE_FIELDS}
    out["v"] = 3
    out["state"] = state
    return out


def _session_v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "v": 3}  # the session layout did not change


# MIGRATIONS[kind][v] turns a format-v body (a dict) into a format v+1 body.
MIGRATIONS: dict[int, dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    KIND_SNAPSHOT: {1: _run_v1_to_v2, 2: _run_v2_to_v3},
    KIND_DELTA: {1: _run_v1_to_v2, 2: _run_v2_to_v3},
    KIND_SESSION: {1: _session_v1_to_v2, 2: _session_v2_to_v3},
}

_encode = msgspec.msgpack.Encoder().encode


def encode_checkpoint(cp: RunCheckpoint, *, snapshot: bool) -> bytes:
    return encode_frame(cp, kind=KIND_SNAPSHOT if snapshot else KIND_DELTA)


def encode_session(record: SessionRecord) -> bytes:
    return encode_frame(record, kind=KIND_SESSION)


def _decode(data: bytes, where: str, kinds: tuple[int, ...], tp: type[Any]) -> tuple[int, Any]:
    try:
        kind = frame_header(data).kind
        if kind not in kinds:
            raise CorruptStateError(f"a frame of kind {kind:#x}, expected one of {kinds}")
        try:
            obj = decode_frame(data, type=tp)
        except IncompatibleStateError:  # another layout: an older format, maybe
            obj = None
        if obj is not None and obj.v == FORMAT_VERSION:
            return kind, obj
        body = decode_frame(data)
    except CorruptStateError as exc:
        raise CorruptStateError(
            f"{where} is damaged ({exc}); restore it from a backup or delete it — the other "
            "keys of the store are unaffected"
        ) from None
    except IncompatibleStateError as exc:
        raise IncompatibleStateError(f"{where}: {exc}") from None
    # The typed decode failed: an older format, or a body of an unknown layout.
    # Format 2 had ``v`` default to 2 and omitted defaults, so its bodies carry no ``v``.
    if isinstance(body, dict) and "v" not in body:
        body["v"] = 2
    if not isinstance(body, dict) or not isinstance(body.get("v"), int):
        raise CorruptStateError(f"{where} holds a frame whose body is not a versioned record")
    version = body["v"]
    if version > FORMAT_VERSION:
        raise IncompatibleStateError(
            f"{where} was written in format {version}, newer than this build reads "
            f"({FORMAT_VERSION}); upgrade openheim"
        )
    steps = MIGRATIONS.get(kind, {})
    while version < FORMAT_VERSION:
        step = steps.get(version)
        if step is None:
            raise IncompatibleStateError(
                f"{where} uses format {version}, which this build cannot migrate"
            )
        try:
            body = step(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A damaged body (or one written by hand) that lacks what its format promised.
            raise CorruptStateError(
                f"{where} holds a format-{version} record that cannot be migrated "
                f"({type(exc).__name__}: {exc}); restore it from a backup or delete it"
            ) from None
        version = body["v"]
    try:
        return kind, msgspec.convert(body, tp)
    except msgspec.ValidationError as exc:
        raise CorruptStateError(
            f"{where} does not match its format {FORMAT_VERSION}: {exc}"
        ) from None


def decode_checkpoint(data: bytes, where: str = "a checkpoint") -> tuple[bool, RunCheckpoint]:
    """(is_snapshot, checkpoint); CorruptStateError / IncompatibleStateError name ``where``."""
    kind, cp = _decode(data, where, (KIND_SNAPSHOT, KIND_DELTA), RunCheckpoint)
    return kind == KIND_SNAPSHOT, cp


def decode_session(data: bytes, where: str = "a session") -> SessionRecord:
    record: SessionRecord = _decode(data, where, (KIND_SESSION,), SessionRecord)[1]
    return record


def replay(records: list[tuple[bool, RunCheckpoint]]) -> RunCheckpoint:
    """Fold a snapshot and the deltas after it into one full checkpoint (the last state)."""
    start = max((i for i, (snap, _) in enumerate(records) if snap), default=None)
    if start is None:
        raise CorruptStateError("a run's checkpoint log has no snapshot to start from")
    snapshot = records[start][1]
    messages = list(snapshot.messages)
    last = snapshot
    for _, cp in records[start + 1 :]:
        if cp.base != len(messages):
            raise CorruptStateError(
                f"run {snapshot.run_id!r}: a delta starts at message {cp.base} but the checkpoints "
                f"before it hold {len(messages)} messages (a record is missing)"
            )
        messages.extend(cp.messages)
        last = cp
    # Deltas leave out the run's identity; the snapshot has it.
    state = msgspec.structs.replace(
        last.state,
        run_id=snapshot.run_id,
        agent=snapshot.agent,
        session=snapshot.session,
        messages=messages,
        history=snapshot.state.history,
    )
    return msgspec.structs.replace(last, state=state, base=0)


def checkpoint_of(
    state: RunState, status: RunStatus, base: int, user_state: Any = None
) -> RunCheckpoint:
    """The checkpoint of ``state`` holding its messages from index ``base`` on.

    A delta (``base > 0``) leaves out the run id, agent, session and history: the
    snapshot it follows holds them, and every delta stays a few bytes more
    than the messages it adds.
    """
    delta = base > 0
    return RunCheckpoint(
        v=FORMAT_VERSION,
        state=RunState(
            run_id="" if delta else state.run_id,
            agent="" if delta else state.agent,
            session=None if delta else state.session,
            messages=state.messages[base:],
            usage=state.usage,
            iterations=state.iterations,
            output_retries=state.output_retries,
            tool_retries=dict(state.tool_retries),
            pending=list(state.pending),
            completed=dict(state.completed),
            decisions=dict(state.decisions),
            history=[] if delta else state.history,
        ),
        status=status,
        base=base,
        user_state=user_state,
        at=time.time(),
    )


def state_of(cp: RunCheckpoint) -> RunState:
    """A copy of the :class:`RunState` a full checkpoint describes (safe to continue)."""
    s = cp.state
    return msgspec.structs.replace(
        s,
        messages=list(s.messages),
        tool_retries=dict(s.tool_retries),
        pending=list(s.pending),
        completed=dict(s.completed),
        decisions=dict(s.decisions),
        history=list(s.history),
    )


def write_snapshot_file(
    path: str | os.PathLike[str], state: RunState, user_state: Any = None
) -> None:
    """Write a full snapshot of ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    atomic_write(
        path, encode_checkpoint(checkpoint_of(state, "running", 0, user_state), snapshot=True)
    )


def read_snapshot_file(path: str | os.PathLike[str]) -> RunCheckpoint:
    """The snapshot in ``path``; CorruptStateError naming the file if it is damaged."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_checkpoint(data, f"snapshot file {os.fspath(path)!r}")[1]
