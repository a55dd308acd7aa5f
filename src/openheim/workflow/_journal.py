"""Where a workflow's runs are recorded: a store (durable), or this process only.

``StoreJournal`` appends each record to the log ``wf/<run_id>`` of a
:class:`~openheim.stores.Store` and keeps approvals under
``wfapproval/<id>``; ``LocalJournal`` (a workflow without a store) keeps
nothing but the views of waiting runs and their approvals in memory, so a
run with no store costs no encoding at all.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec

from openheim import telemetry
from openheim.errors import VersionConflictError, WorkflowApprovalError, WorkflowStateError
from openheim.workflow._records import (
    ApprovalRecord,
    Record,
    Waiting,
    decode_approval,
    decode_record,
    encode_approval,
    encode_record,
)

if TYPE_CHECKING:
    from openheim.stores._base import Store
    from openheim.workflow._view import RunView

__all__ = ["Journal", "LocalJournal", "StoreJournal"]

_LOG = "wf/"
_APPROVAL = "wfapproval/"


class Journal:
    """The interface both journals share."""

    durable = False
    typed = True  # records read back hold typed values (no conversion needed)

    async def append(self, run_id: str, record: Record) -> int:
        raise NotImplementedError

    async def read(self, run_id: str) -> list[tuple[int, Record]]:
        raise NotImplementedError

    async def runs(self) -> list[str]:
        raise NotImplementedError

    async def get_approval(self, approval_id: str) -> tuple[ApprovalRecord, int] | None:
        raise NotImplementedError

    async def put_approval(self, record: ApprovalRecord, version: int | None) -> None:
        """Write ``record``: create it (``version=0``; no error if it exists) or
        compare-and-set from ``version`` (WorkflowApprovalError if someone else won)."""
        raise NotImplementedError

    async def approvals(self) -> list[ApprovalRecord]:
        raise NotImplementedError

    async def delete_run(self, run_id: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class LocalJournal(Journal):
    """No records: only waiting runs' views and approvals, in this process."""

    def __init__(self) -> None:
        self.views: dict[str, RunView] = {}
        self._approvals: dict[str, tuple[ApprovalRecord, int]] = {}

    async def append(self, run_id: str, record: Record) -> int:
        return 0

    async def read(self, run_id: str) -> list[tuple[int, Record]]:
        return []

    async def runs(self) -> list[str]:
        return sorted(self.views)

    async def get_approval(self, approval_id: str) -> tuple[ApprovalRecord, int] | None:
        return self._approvals.get(approval_id)

    async def put_approval(self, record: ApprovalRecord, version: int | None) -> None:
        current = self._approvals.get(record.id)
        if version == 0:
            if current is None:
                self._approvals[record.id] = (record, 1)
            return
        if current is None or current[1] != version:
            raise WorkflowApprovalError(f"approval {record.id!r} was decided concurrently")
        if record.status == "pending":
            self._approvals[record.id] = (record, version + 1)
        else:
            del self._approvals[record.id]  # decided: nothing will read it again

    async def approvals(self) -> list[ApprovalRecord]:
        return [rec for rec, _ in self._approvals.values()]

    async def delete_run(self, run_id: str) -> None:
        self.views.pop(run_id, None)


class StoreJournal(Journal):
    """Records in a store's logs, approvals under its keys (see the module docstring)."""

    durable = True
    typed = False

    def __init__(self, store: Store, owned: bool) -> None:
        self.store = store
        self._owned = owned

    async def append(self, run_id: str, record: Record) -> int:
        try:
            data = encode_record(record)
        except TypeError as exc:
            raise WorkflowStateError(
                f"run {run_id!r}: a checkpoint cannot be stored ({exc}); state values, map "
                "results and approval payloads must be plain data (str, numbers, lists, dicts, "
                "Structs, dataclasses, datetimes)"
            ) from None
        t0 = time.perf_counter()
        seq = await self.store.append(_LOG + run_id, data)
        telemetry.record_checkpoint(len(data), time.perf_counter() - t0, "workflow")
        return seq

    async def read(self, run_id: str) -> list[tuple[int, Record]]:
        log = _LOG + run_id
        return [
            (seq, decode_record(data, f"record {seq} of workflow run {run_id!r} (log {log!r})"))
            for seq, data in await self.store.read_log(log)
        ]

    async def runs(self) -> list[str]:
        return [name[len(_LOG) :] for name in await self.store.list_logs(_LOG)]

    async def get_approval(self, approval_id: str) -> tuple[ApprovalRecord, int] | None:
        got = await self.store.get(_APPROVAL + approval_id)
        if got is None:
            return None
        data, version = got
        return decode_approval(data, f"approval {approval_id!r}"), version

    async def put_approval(self, record: ApprovalRecord, version: int | None) -> None:
        try:
            await self.store.put(
                _APPROVAL + record.id, encode_approval(record), expect_version=version
            )
        except VersionConflictError:
            if version == 0:
                return  # already recorded (a run resumed after a crash writes it again)
            raise WorkflowApprovalError(
                f"approval {record.id!r} was decided by someone else at the same time; "
                "read it again with approvals()"
            ) from None

    async def approvals(self) -> list[ApprovalRecord]:
        out = []
        for key in await self.store.list(_APPROVAL):
            got = await self.store.get(key)
            if got is not None:
                out.append(decode_approval(got[0], f"approval {key!r}"))
        return out

    async def delete_run(self, run_id: str) -> None:
        """Drop run ``run_id``'s log and the approvals it recorded (the log last: a
        delete cut short leaves the run, so it can be deleted again)."""
        for _, data in await self.store.read_log(_LOG + run_id):
            rec = decode_record(data, f"a record of workflow run {run_id!r}")
            if isinstance(rec, Waiting):
                await self.store.delete(_APPROVAL + rec.approval.id)
        await self.store.delete_log(_LOG + run_id)

    async def aclose(self) -> None:
        if self._owned:
            await self.store.aclose()


async def cancel_approvals(journal: Journal, pending: list[ApprovalRecord]) -> None:
    """Mark ``pending`` (the approvals a run waited for when it was cancelled) as
    cancelled: they leave the pending list and can no longer be decided. One decided
    meanwhile keeps its decision."""
    for rec in pending:
        got = await journal.get_approval(rec.id)
        if got is None or got[0].status != "pending":
            continue
        with contextlib.suppress(WorkflowApprovalError):
            await journal.put_approval(msgspec.structs.replace(got[0], status="cancelled"), got[1])


def open_journal(store: Any, namespace: str | None) -> Journal:
    if store is None:
        return LocalJournal()
    if isinstance(store, str):
        from openheim.stores import open_store

        return StoreJournal(open_store(store, namespace=namespace or "default"), owned=True)
    s: Store = store.namespace(namespace) if namespace is not None else store
    return StoreJournal(s, owned=False)
