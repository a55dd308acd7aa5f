"""The :class:`TaskQueue` protocol a batch-mode queue backend implements.

Batch mode (``wf.submit(input, queue=URL)`` and ``openheim worker``) moves a
run forward one *task* at a time: a task is one node of one superstep of one
run (``"<step>:<node>"``, as in ``RunView.task_id``), or one item of a map
node. The queue only carries tasks; the run's records live in a store, and a
worker commits a task's result there with a compare-and-set on the task's
fencing key (see ``openheim.workflow._batch``), so the queue's own guarantees
need only be at-least-once:

- ``put`` adds tasks; a task whose ``dedup`` id was put before (within the
  backend's de-duplication window) is dropped, so a successor enqueued twice by
  two workers racing to finish a superstep is queued once.
- ``take`` gives a consumer up to ``count`` deliveries: new tasks, and tasks
  whose previous consumer has not acked or extended them within the
  visibility timeout (reclaimed). ``Delivery.deliveries`` counts how often
  the task was handed out (1 the first time).
- ``extend`` (a heartbeat) keeps a long task claimed; ``ack`` removes a task
  for good; ``release`` makes it available again at once (a draining worker
  giving back what it has not started).
- A task handed out more than ``max_deliveries`` times is not given out again:
  ``take`` moves it to the dead letters instead (``dead_letters`` lists them,
  ``retry_dead_letter`` puts one back as new).

Backends: ``redis://`` (Streams with a consumer group) in ``queues.redis``,
``nats://`` (a JetStream stream with a durable pull consumer) in
``queues.nats``; ``open_queue(url)`` picks one.
"""

from __future__ import annotations

import builtins
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["DeadLetter", "Delivery", "QueueStats", "Task", "TaskQueue"]


class Task(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One unit of work on the queue (what a message carries)."""

    workflow: str  # the workflow's name: workers look its definition up by it
    run_id: str
    task: str  # "<step>:<node>" or "<step>:<node>#<item index>"
    namespace: str = "default"  # the store namespace the run lives in
    traceparent: str | None = None  # W3C trace context, so traces join across workers
    dedup: str | None = None  # de-duplication id (default: f"{run_id}/{claim_id()}")
    # The run's retries when this task was put (a failed run resumed: see Retried): the
    # failed task's claim is spent, so a retried run's tasks claim under new names.
    retry: int = 0

    def claim_id(self) -> str:
        """The name its claim (fencing token) is kept under: the task, then ``~<retry>``."""
        return f"{self.task}~{self.retry}" if self.retry else self.task

    def dedup_id(self) -> str:
        return self.dedup if self.dedup is not None else f"{self.run_id}/{self.claim_id()}"


class Delivery(msgspec.Struct, kw_only=True):
    """A task handed to one consumer; ``id`` is the backend's message id."""

    id: str
    task: Task
    deliveries: int = 1
    # Backend-private handle (a NATS message, ...); not serialised.
    handle: object = None
    # Put once, by the fenced commit of its predecessor's result (the Redis worker's
    # chained settle): its first delivery needs no fencing write (see _redis_fused).
    once: bool = False


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A task that was given up on: after too many deliveries, or by a worker."""

    id: str
    task: Task
    deliveries: int
    reason: str
    at: float


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """What ``openheim worker`` and the metrics report about a queue."""

    depth: int  # tasks waiting to be taken
    in_flight: int  # taken and not yet acked
    redeliveries: int  # deliveries beyond the first, since the queue was created
    dead_letters: int


@runtime_checkable
class TaskQueue(Protocol):
    """A persistent, at-least-once task queue (see the module docstring)."""

    url: str
    name: str  # the queue's name within the server (stream / subject prefix)
    visibility_timeout: float  # seconds before an un-extended claim may be reclaimed
    max_deliveries: int

    async def put(self, tasks: builtins.list[Task]) -> int:
        """Enqueue ``tasks`` durably; return how many were new (not de-duplicated)."""
        ...

    async def take(
        self, consumer: str, count: int = 1, *, timeout: float = 1.0
    ) -> builtins.list[Delivery]:
        """Up to ``count`` deliveries for ``consumer``, waiting at most ``timeout`` s."""
        ...

    async def extend(self, delivery: Delivery) -> None:
        """Keep ``delivery`` claimed for another visibility timeout (a heartbeat)."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The task is finished (its result committed, or found already committed)."""
        ...

    async def release(self, delivery: Delivery) -> None:
        """Give ``delivery`` back so another consumer can take it at once."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move ``delivery`` to the dead letters now, with ``reason``."""
        ...

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """The dead letters, oldest first."""
        ...

    async def retry_dead_letter(self, dead_letter_id: str) -> bool:
        """Put a dead letter back on the queue as a new task; False if it is not there."""
        ...

    async def stats(self) -> QueueStats:
        """Queue depth, in-flight tasks, redeliveries and dead letters."""
        ...

    async def purge(self) -> None:
        """Drop every task and dead letter of this queue (tests and ``--reset``)."""
        ...

    async def aclose(self) -> None:
        """Close the connection (the queue is unusable afterwards)."""
        ...
