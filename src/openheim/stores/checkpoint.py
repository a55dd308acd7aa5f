"""``Checkpointer``: every step of an agent run durably recorded, so runs survive crashes.

Give an agent one (``Agent(..., checkpointer=Checkpointer(store))``) and its
runs write a checkpoint when they start, after every model turn and after
every tool result, into the log ``run/<run_id>`` of the store. A run that
ends adds its messages to the session (idempotently, by run id) and drops
its log; a run paused for approval keeps it. After a crash,
``await agent.recover()`` finishes every run the log still holds (tools
whose results were checkpointed are not called again), and
``agent.resume_run(run_id, approvals)`` continues one.

Records are small deltas (the messages added since the previous record);
every ``snapshot_every`` deltas, or once the deltas outweigh the last
snapshot, a full snapshot is written instead and records that are no longer
needed to restore the newest ``keep`` checkpoints are trimmed. Stored bytes
thus stay within a small multiple of the run's own messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from openheim import telemetry
from openheim.errors import ConfigError, CorruptStateError
from openheim.snapshot import (
    RunCheckpoint,
    RunState,
    RunStatus,
    checkpoint_of,
    decode_checkpoint,
    encode_checkpoint,
    replay,
)
from openheim.stores._base import Store

if TYPE_CHECKING:
    from openheim.stores.history import HistoryStore

__all__ = ["Checkpointer"]

logger = logging.getLogger("openheim.stores")

_LOG = "run/"


class _Track:
    """What this process knows of a run's log: enough to write the next delta."""

    __slots__ = ("base", "delta_bytes", "deltas", "last_snapshot", "records", "snapshot_bytes")

    def __init__(self) -> None:
        self.base = 0  # messages covered by the records so far
        self.deltas = 0
        self.delta_bytes = 0
        self.snapshot_bytes = 0
        self.records: list[tuple[int, bool]] = []  # (seq, is_snapshot), oldest first
        self.last_snapshot = 0  # index in records of the newest snapshot


class _LeasedRuns(set[str]):
    """The runs executing here, each holding its lease (``lease/run/<id>``) until discarded.

    A process that resumes interrupted runs (``openheim serve``) takes a run's
    lease first, so it leaves alone a run that is alive in another process,
    and takes over one whose process died once the lease has expired.
    """

    def __init__(self, store: Store, ttl: float) -> None:
        super().__init__()
        self.store = store
        self.ttl = ttl
        self._stops: dict[str, asyncio.Event] = {}

    def add(self, run_id: str) -> None:
        super().add(run_id)
        if run_id not in self._stops:
            stop = self._stops[run_id] = asyncio.Event()
            task = asyncio.get_running_loop().create_task(self._hold(run_id, stop))
            _HOLDERS.add(task)
            task.add_done_callback(_HOLDERS.discard)

    def discard(self, run_id: object) -> None:
        super().discard(run_id)
        stop = self._stops.pop(run_id, None) if isinstance(run_id, str) else None
        if stop is not None:
            stop.set()

    async def _hold(self, run_id: str, stop: asyncio.Event) -> None:
        from openheim.stores.lease import Lease

        lease = Lease(self.store, "run/" + run_id, ttl=self.ttl)
        try:
            if not await lease.acquire():
                logger.warning("run %r is also executing in another process", run_id)
                return
            async with lease.kept():
                await stop.wait()
        except Exception:
            logger.warning("holding the lease of run %r failed", run_id, exc_info=True)


_HOLDERS: set[asyncio.Task[None]] = set()


class Checkpointer:
    """Writes and reads agent-run checkpoints in ``store`` (see the module docstring).

    ``lease_ttl`` (seconds): each run executing here holds its lease in the
    store, renewed every ``lease_ttl / 3``, so that a server resuming
    interrupted runs on the same store leaves it alone (see
    :mod:`openheim.stores.lease`).
    """

    def __init__(
        self,
        store: Store,
        *,
        namespace: str | None = None,
        snapshot_every: int = 64,
        snapshot_bytes: int = 64 * 1024,
        keep: int = 2,
        lease_ttl: float | None = None,
    ) -> None:
        if snapshot_every < 1:
            raise ConfigError(f"snapshot_every must be >= 1, got {snapshot_every!r}")
        if keep < 1:
            raise ConfigError(f"keep must be >= 1, got {keep!r}")
        self.store: Store = store.namespace(namespace) if namespace is not None else store
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        self.keep = keep
        self._tracks: dict[str, _Track] = {}
        # Runs executing in this process right now; with ``lease_ttl``, each holds its lease.
        self.active: set[str] = set() if lease_ttl is None else _LeasedRuns(self.store, lease_ttl)

    def __repr__(self) -> str:
        return f"Checkpointer({self.store!r})"

    @staticmethod
    def log_name(run_id: str) -> str:
        return _LOG + run_id

    async def save(
        self, state: RunState, status: RunStatus = "running", user_state: Any = None
    ) -> int:
        """Record ``state`` durably; returns the record's sequence number."""
        track = self._tracks.get(state.run_id)
        if track is None:
            track = self._tracks[state.run_id] = _Track()
        n = len(state.messages)
        snapshot = (
            not track.records
            or n < track.base
            or track.deltas >= self.snapshot_every
            or track.delta_bytes >= max(self.snapshot_bytes, track.snapshot_bytes)
        )
        cp = checkpoint_of(state, status, 0 if snapshot else track.base, user_state)
        data = encode_checkpoint(cp, snapshot=snapshot)
        log = _LOG + state.run_id
        t0 = time.perf_counter()
        seq = await self.store.append(log, data)
        telemetry.record_checkpoint(len(data), time.perf_counter() - t0, "agent")
        track.base = n
        track.records.append((seq, snapshot))
        if snapshot:
            track.deltas = track.delta_bytes = 0
            track.snapshot_bytes = len(data)
            track.last_snapshot = len(track.records) - 1
        else:
            track.deltas += 1
            track.delta_bytes += len(data)
        await self._trim(log, track)
        return seq

    async def _trim(self, log: str, track: _Track) -> None:
        """Drop the records no longer needed to restore the newest ``keep`` checkpoints."""
        records = track.records
        if track.last_snapshot == 0 or len(records) <= self.keep:
            return  # the oldest record kept is the newest snapshot, or too few records
        oldest_kept = records[-self.keep][0]
        # The newest snapshot at or before the oldest checkpoint we must be able to restore.
        start = max(i for i, (seq, snap) in enumerate(records) if snap and seq <= oldest_kept)
        if start > 0:
            await self.store.trim_log(log, records[start][0] - 1)
            del records[:start]
            track.last_snapshot -= start

    async def load(self, run_id: str) -> RunCheckpoint | None:
        """The newest checkpoint of ``run_id`` (snapshot and deltas folded), or None."""
        log = _LOG + run_id
        raw = await self.store.read_log(log)
        if not raw:
            return None
        records = []
        for seq, data in raw:
            where = f"checkpoint {seq} of run {run_id!r} (log {log!r}, namespace {self.store.ns!r})"
            records.append(decode_checkpoint(data, where))
        try:
            cp = replay(records)
        except CorruptStateError as exc:
            raise CorruptStateError(f"log {log!r}: {exc}") from None
        # Deltas after a restart continue from here.
        track = self._tracks[run_id] = _Track()
        track.base = len(cp.messages)
        track.records = [(seq, snap) for (seq, _), (snap, _) in zip(raw, records, strict=False)]
        track.last_snapshot = max(i for i, (snap, _) in enumerate(records) if snap)
        track.deltas = len(records) - 1 - track.last_snapshot
        return cp

    async def runs(self) -> list[str]:
        """The ids of the runs that have checkpoints (unfinished or paused)."""
        return [name[len(_LOG) :] for name in await self.store.list_logs(_LOG)]

    async def finish(self, state: RunState, history: HistoryStore | None) -> None:
        """Add a finished run to its session (once, by run id), then drop its checkpoints."""
        if state.session is not None and history is not None:
            await history.append(state.session, state.messages, state.usage, run_id=state.run_id)
        await self.discard(state.run_id)

    async def discard(self, run_id: str) -> None:
        """Drop a run's checkpoints (it will not be recovered)."""
        self._tracks.pop(run_id, None)
        await self.store.delete_log(_LOG + run_id)

    async def stored_bytes(self, run_id: str) -> int:
        """Bytes of the checkpoint records currently kept for ``run_id``."""
        return sum(len(r) for _, r in await self.store.read_log(_LOG + run_id))
