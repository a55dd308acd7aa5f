"""Tools that run in a pool of worker processes (``@tool(executor="process")``).

CPU-heavy tools would hold the event loop's GIL; these run in separate
interpreters instead, started with the ``spawn`` method (no forked copy of
the loop, its sockets or its threads). Each call takes an idle worker (or
starts one, up to ``max_workers``), sends it the pickled function and
arguments over a pipe and waits in a thread for the pickled result, so the
pool serves any event loop. A call that times out or is cancelled kills its
worker; a worker that dies (a segfault, ``os._exit``, the OOM killer) fails
only the call it was running, with a :class:`~openheim.errors.ToolError`
saying so, and the next call starts a fresh worker: the pool recovers.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

from openheim.errors import ConfigError, ToolError, ToolTimeout

__all__ = ["ByName", "ProcessPool", "check_process_function", "default_pool"]


class ByName:
    """A function by module and qualified name, looked up in the worker.

    A decorated tool's module attribute is the :class:`Tool`, not the function,
    so pickle cannot send the function by reference itself.
    """

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (ByName, (self.module, self.qualname))

    def resolve(self) -> Callable[..., Any]:
        import importlib

        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        inner = getattr(obj, "function", None)  # a Tool: the function it wraps
        fn: Callable[..., Any] = inner if inner is not None and callable(inner) else obj
        return fn


def _worker_main(conn: Any) -> None:  # pragma: no cover - runs in the worker process
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn, args, kwargs = pickle.loads(payload)
            if type(fn) is ByName:
                fn = fn.resolve()
            out: tuple[Any, ...] = (True, fn(*args, **kwargs))
        except BaseException as exc:  # everything goes back to the caller
            out = (False, exc, traceback.format_exc())
        try:
            data = pickle.dumps(out)
        except Exception as exc:  # the result (or the error) does not pickle
            what = "result" if out[0] else "error"
            data = pickle.dumps(
                (False, TypeError(f"the tool's {what} cannot be pickled: {exc}"), "")
            )
        conn.send_bytes(data)


class _Worker:
    __slots__ = ("conn", "proc")

    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def kill(self, close: bool = True) -> None:
        """Kill the process; ``close=False`` while a thread still reads the pipe (it sees
        EOF and closes it: closing under a reader could hand its fd to a new pipe)."""
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.join(5)
        if close:
            with contextlib.suppress(Exception):
                self.conn.close()

    def alive(self) -> bool:
        return bool(self.proc.is_alive())


class _Crashed(Exception):
    pass


class _TimedOut(Exception):  # not TimeoutError: that is an OSError, as a broken pipe is
    pass


class ProcessPool:
    """Up to ``max_workers`` worker processes (default: the CPU count), started on demand."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigError(f"max_workers is >= 1 (or None), got {max_workers!r}")
        import multiprocessing

        self.max_workers = max_workers or os.cpu_count() or 1
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        # Threads wait for a free worker, and for answers: one per worker, so an
        # answer is never stuck behind callers waiting for a worker.
        self._waiters = concurrent.futures.ThreadPoolExecutor(
            32, thread_name_prefix="openheim-tool-wait"
        )
        self._threads = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="openheim-tool-call"
        )

    def __repr__(self) -> str:
        return f"<ProcessPool {self._busy} busy, {len(self._idle)} idle, max {self.max_workers}>"

    @property
    def workers(self) -> int:
        """Worker processes alive now (busy or idle)."""
        return self._busy + len(self._idle)

    def _take(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise ToolError("the tool process pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        self._busy += 1
                        return worker
                    worker.kill()  # died while idle: replaced below
                if self._busy < self.max_workers:
                    self._busy += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self._ctx)
        except BaseException:
            self._give_back(None)
            raise

    def _give_back(self, worker: _Worker | None) -> None:
        with self._cond:
            self._busy -= 1
            if worker is not None:
                if self._closed:
                    worker.kill()
                else:
                    self._idle.append(worker)
            self._cond.notify()

    def _taken_late(self, fut: concurrent.futures.Future[_Worker]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._give_back(fut.result())

    def _call(self, worker: _Worker, payload: bytes, timeout: float | None) -> Any:
        """In a thread: send the call, wait for its answer (``_Crashed``: the worker died)."""
        try:
            worker.conn.send_bytes(payload)
            if timeout is not None and not worker.conn.poll(timeout):
                raise _TimedOut
            return worker.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            with contextlib.suppress(Exception):
                worker.conn.close()
            raise _Crashed from exc

    async def run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        name: str | None = None,
    ) -> Any:
        """``fn(*args, **kwargs)`` in a worker process; its exception is raised here."""
        label = name or getattr(fn, "__name__", repr(fn))
        target: Any = fn
        if inspect.isfunction(fn) and "<" not in fn.__qualname__:
            target = ByName(fn.__module__, fn.__qualname__)
        try:
            payload = pickle.dumps((target, args, kwargs or {}))
        except Exception as exc:
            raise ConfigError(
                f"tool {label!r} runs in a process, so its function and arguments must be "
                f"picklable (a module-level function, plain values): {exc}"
            ) from exc
        taking = self._waiters.submit(self._take)
        try:
            worker = await asyncio.wrap_future(taking)
        except asyncio.CancelledError:  # a worker taken after all goes back to the pool
            taking.add_done_callback(self._taken_late)
            raise
        healthy = False
        calling = self._threads.submit(self._call, worker, payload, timeout)
        try:
            data = await asyncio.wrap_future(calling)
            healthy = True
        except _TimedOut:
            raise ToolTimeout(
                f"tool {label!r} did not finish within {timeout:g} s; its worker process was killed"
            ) from None
        except _Crashed:
            worker.proc.join(5)
            code = worker.proc.exitcode
            raise ToolError(
                f"tool {label!r}: its worker process died while running it (exit code "
                f"{code}); a new worker serves the next call"
            ) from None
        finally:
            if not healthy:  # timed out, cancelled, crashed: the worker is not reused
                worker.kill(close=calling.done())
                self._give_back(None)
        self._give_back(worker)
        ok, value, *tb = pickle.loads(data)
        if ok:
            return value
        note = getattr(value, "add_note", None)  # Python 3.11+
        if tb and tb[0] and note is not None:
            note(f"in the tool's worker process:\n{tb[0]}")
        raise value

    def close(self) -> None:
        """Stop the idle workers now and the busy ones as they finish."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.kill()
        self._threads.shutdown(wait=False)
        self._waiters.shutdown(wait=False)


_default: ProcessPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ProcessPool:
    """The process pool that ``executor="process"`` tools share (made on first use)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = ProcessPool()
            atexit.register(_default.close)
        return _default


def check_process_function(function: Any, name: str) -> None:
    """A clear error now for a function a worker process could not import."""
    import functools

    inner = function
    while isinstance(inner, functools.partial):
        inner = inner.func
    if inspect.iscoroutinefunction(inner):
        raise ConfigError(
            f'tool {name!r}: executor="process" is for plain (sync) functions; an async '
            "tool already runs on the event loop"
        )
    qualname = getattr(inner, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(
            f'tool {name!r}: executor="process" needs a module-level function (a worker '
            f"process imports it by name); {qualname!r} is local to a function"
        )
