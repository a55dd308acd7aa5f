"""What the runtime keeps in its store: actor state snapshots and dead letters.

Both are frames (see :func:`openheim._core.encode_frame`) around a msgspec
body, so nothing here uses pickle. An actor's snapshot is the value of its
``ctx.state`` under the key ``actor/<id>``; dead letters are records of the
log ``dead-letters``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from openheim._core import decode_frame, encode_frame

__all__ = [
    "DEAD_LETTERS",
    "KIND_ACTOR_STATE",
    "KIND_DEAD_LETTER",
    "ChildFailed",
    "DeadLetter",
    "RestartPolicy",
    "decode_dead_letter",
    "decode_state",
    "encode_dead_letter",
    "encode_state",
    "state_key",
]

KIND_ACTOR_STATE = 0x4F480401
KIND_DEAD_LETTER = 0x4F480402
DEAD_LETTERS = "dead-letters"


def state_key(actor_id: str) -> str:
    return "actor/" + actor_id


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a failing actor is supervised (one-for-one).

    A handler that raises is restarted (a new object from its factory, its
    state restored from its last snapshot) after ``backoff`` seconds, doubled
    per retry up to ``max_backoff``, and the message is tried again up to
    ``retries`` times; then it goes to the dead-letter log and the ask fails
    with :class:`~openheim.errors.ActorFailed`. More than ``max_restarts``
    restarts within ``within`` seconds stop the actor (after telling its
    parent, if it has one, with a :class:`ChildFailed` message).
    """

    retries: int = 2
    backoff: float = 0.01
    max_backoff: float = 1.0
    max_restarts: int = 10
    within: float = 60.0


class ChildFailed(msgspec.Struct, frozen=True):
    """Sent to a parent when a child actor exceeded its restart budget and stopped."""

    child: str
    error: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message its actor could not handle: who, what, why, when (epoch seconds)."""

    actor: str
    message: Any
    error: str
    error_type: str
    at: float
    seq: int = 0


def _plain(msg: Any) -> Any:
    """``msg`` if msgspec can encode it, else its repr (a dead letter never fails to write)."""
    try:
        msgspec.msgpack.encode(msg)
    except (TypeError, ValueError, OverflowError):
        return repr(msg)
    return msg


def encode_dead_letter(actor: str, msg: Any, exc: BaseException) -> bytes:
    record = DeadLetter(
        actor=actor,
        message=_plain(msg),
        error=str(exc),
        error_type=type(exc).__name__,
        at=time.time(),
    )
    return encode_frame(record, kind=KIND_DEAD_LETTER)


def decode_dead_letter(data: bytes, seq: int) -> DeadLetter:
    record = decode_frame(data, type=DeadLetter)
    return msgspec.structs.replace(record, seq=seq)


def encode_state(state: Any) -> bytes:
    return encode_frame(state, kind=KIND_ACTOR_STATE)


def decode_state(data: bytes, state_type: Any = None) -> Any:
    return decode_frame(data, type=state_type) if state_type is not None else decode_frame(data)
