"""Faults: SIGKILL of the server mid-run, dropped PostgreSQL connections, a failing
model endpoint, a full disk under the SQLite store.

Each function returns a summary dict with ``tried`` / ``survived`` / ``bad`` (lost,
duplicated or corrupted: must be 0) plus details.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from soakflows import CHAIN_TABLE, STEPS  # noqa: E402
from soaklib import child_env, effect_counts, start_server, write_project  # noqa: E402

WF = "/v1/workflows/chain"
POSTGRES_URL = os.environ.get("OPENHEIM_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


# ---- 1. SIGKILL of `openheim serve` during real-time workflow runs on SQLite ---------------


async def _read_runs(config: Path, run_ids: list[str]) -> dict[str, tuple[str, list[str], Any]]:
    """run id -> (status, committed step names, final state) as the store holds them."""
    from openheim.config import load_config

    base = load_config(config).build_workflow("chain")
    wf = base.scoped("tenant/acme")
    out: dict[str, tuple[str, list[str], Any]] = {}
    try:
        for rid in run_ids:
            try:
                status = await wf.status(rid)
            except Exception:  # submitted, but killed before the run was recorded
                out[rid] = ("missing", [], None)
                continue
            steps = [c.node for c in await wf.history(rid) if c.kind == "step" and c.node]
            out[rid] = (status.status, steps, status.state)
    finally:
        await wf.aclose()
        await base.aclose()
    return out


def _resume(c: Any, rid: str) -> Any:
    """Resume ``rid``; a 409 while the killed server's lease is live says when to retry."""
    for _ in range(30):
        r = c.post(f"{WF}/runs/{rid}/resume")
        if r.status_code != 409 or "Retry-After" not in r.headers:
            return r
        time.sleep(float(r.headers["Retry-After"]))
    return r


def server_kills(trials: int, runs_per_trial: int = 3, work: Path | None = None) -> dict[str, Any]:
    """``trials`` SIGKILLs of the server at random points while workflow runs are in flight.

    After every kill the store is read: the steps it holds as committed must
    never run again (their fsynced side-effect count is frozen from then on).
    At the end every run is resumed to completion and must hold each of the six
    steps exactly once, in order.
    """
    work = work or Path(tempfile.mkdtemp(prefix="openheim-soak-kill-"))
    folder = work / "kill"
    effects = folder / "effects"
    config = write_project(folder, f"sqlite:///{folder / 'state.db'}", extra=CHAIN_TABLE)
    # A killed server's leases lapse after run_lease_ttl: 3 s, so resumes wait little.
    text = config.read_text().replace(
        "shutdown_grace = 5\n", "shutdown_grace = 5\nrun_lease_ttl = 3\n"
    )
    config.write_text(text)
    env = child_env(SOAK_EFFECTS=str(effects))
    rng = random.Random(17)
    runs: list[str] = []
    frozen: dict[tuple[str, str], int] = {}  # committed at a kill -> effects count then
    unfinished: set[str] = set()
    kills = 0
    mid_run = 0
    for trial in range(trials):
        served = start_server(config, env=env)
        with served.client() as c:
            for rid in sorted(unfinished):
                r = _resume(c, rid)
                if r.status_code == 404:  # never recorded: submit it again under its id
                    r = c.post(f"{WF}/runs", json={"input": {"tag": rid}, "run_id": rid})
                if r.status_code not in (200, 202):
                    raise RuntimeError(f"resume {rid}: {r.status_code} {r.text}")
            for i in range(runs_per_trial):
                rid = f"t{trial}-{i}"
                r = c.post(f"{WF}/runs", json={"input": {"tag": rid}, "run_id": rid})
                if r.status_code != 202:
                    raise RuntimeError(f"submit {rid}: {r.status_code} {r.text}")
                runs.append(rid)
                unfinished.add(rid)
        time.sleep(rng.uniform(0.0, 0.6))
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(30)
        kills += 1
        seen = asyncio.run(_read_runs(config, sorted(unfinished)))
        counts = effect_counts(effects)
        if any(status == "running" for status, _, _ in seen.values()):
            mid_run += 1
        for rid, (status, steps, _state) in seen.items():
            for step in steps:
                key = (rid, step)
                if key not in frozen:
                    frozen[key] = counts[key]
            if status == "done":
                unfinished.discard(rid)
    # Finish everything on a last server, then check.
    served = start_server(config, env=env)
    try:
        with served.client() as c:
            for rid in sorted(unfinished):
                r = _resume(c, rid)
                if r.status_code == 404:
                    c.post(f"{WF}/runs", json={"input": {"tag": rid}, "run_id": rid})
            # Wait for every run to finish (resuming again any that stopped running here).
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = [
                    r for r in runs if c.get(f"{WF}/runs/{r}").json().get("status") == "running"
                ]
                if not left:
                    break
                time.sleep(2.0)
                for rid in left:
                    c.post(f"{WF}/runs/{rid}/resume")
    finally:
        served.proc.terminate()
        served.proc.wait(30)
    final = asyncio.run(_read_runs(config, runs))
    counts = effect_counts(effects)
    lost = dup = rerun = 0
    problems: list[str] = []
    for rid in runs:
        status, steps, state = final[rid]
        log = list(state.log) if state is not None else []
        if status != "done" or log != list(STEPS):
            c_log = Counter(log)
            lost += sum(1 for s in STEPS if c_log[s] == 0)
            dup += sum(n - 1 for n in c_log.values() if n > 1)
            problems.append(f"{rid}: {status} {log}")
        if Counter(steps) != Counter(STEPS):
            problems.append(f"{rid}: committed steps {steps}")
            dup += sum(n - 1 for n in Counter(steps).values() if n > 1)
        for s in STEPS:
            if counts[(rid, s)] == 0:
                lost += 1
            key = (rid, s)
            if key in frozen and counts[key] != frozen[key]:
                rerun += 1
                problems.append(f"{rid}/{s} ran again after it was committed")
    return {
        "tried": kills,
        "survived": kills if not problems else kills - len({p.split(":")[0] for p in problems}),
        "bad": lost + dup + rerun,
        "runs": len(runs),
        "steps": len(runs) * len(STEPS),
        "kills_mid_run": mid_run,
        "effects_repeated_in_flight": sum(counts.values()) - len(runs) * len(STEPS),
        "lost": lost,
        "duplicated": dup,
        "committed_rerun": rerun,
        "problems": problems[:10],
    }


# ---- 2. dropped PostgreSQL connections ---------------------------------------------------


def _pg_workflow(url: str, ns: str, effects: Path) -> Any:
    import itertools

    import msgspec

    from openheim.workflow import Workflow

    class PgChain(msgspec.Struct):
        tag: str = ""
        log: list[str] = msgspec.field(default_factory=list)

    wf = Workflow("pgchain", state=PgChain, store=url, namespace=ns)
    for name in STEPS:

        async def step(s: PgChain, name: str = name) -> dict[str, Any]:
            with effects.open("a") as f:
                f.write(f"{s.tag} {name} 0\n")
            await asyncio.sleep(random.uniform(0.02, 0.1))
            return {"log": [*s.log, name]}

        wf.step(step, name=name)
    for a, b in itertools.pairwise(STEPS):
        wf.edge(a, b)
    return wf


async def _pg_drops(runs: int, interval: float) -> dict[str, Any]:
    import psycopg

    from openheim.errors import RunNotFoundError

    app = f"openheim-soak-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}application_name={app}"
    ns = f"soak-pg-{uuid.uuid4().hex[:8]}"
    effects = Path(tempfile.mkdtemp(prefix="openheim-soak-pg-")) / "effects"
    wf = _pg_workflow(url, ns, effects)
    killed = 0
    stop = asyncio.Event()

    async def killer() -> None:
        nonlocal killed
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            while not stop.is_set():
                await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    (app,),
                )
                row = await cur.fetchone()
                killed += int(row[0]) if row else 0

    results: list[Any] = []
    failures: list[str] = []
    resumed = 0
    try:
        k = asyncio.ensure_future(killer())
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            nonlocal resumed
            rid = f"pg-{i}"
            async with sem:
                # "Pause and continue": a run that a dropped connection failed is resumed
                # (from its last committed step) until the database answers again.
                recorded = False
                for _attempt in range(600):
                    try:
                        if not recorded:
                            res = await wf.run({"tag": rid}, run_id=rid)
                        else:
                            res = await wf.resume(rid)
                            resumed += 1
                        results.append(res)
                        return
                    except RunNotFoundError:  # dropped before the run was recorded: start it
                        recorded = False
                    except Exception as exc:  # a dropped connection surfacing: resume
                        recorded = True
                        failures.append(f"{rid}: {type(exc).__name__}: {exc}"[:300])
                        await asyncio.sleep(0.1)

        async def stopper() -> None:  # the drops end some time; the runs must then finish
            await asyncio.sleep(max(3.0, runs * 0.1))
            stop.set()

        st_task = asyncio.ensure_future(stopper())
        await asyncio.gather(*(one(i) for i in range(runs)))
        stop.set()
        st_task.cancel()
        await k
        lost = dup = 0
        for i in range(runs):
            rid = f"pg-{i}"
            try:
                st = await wf.status(rid)
            except RunNotFoundError:
                lost += len(STEPS)
                continue
            log = list(st.state.log)
            if st.status != "done" or log != list(STEPS):
                c = Counter(log)
                lost += sum(1 for s in STEPS if c[s] == 0)
                dup += sum(n - 1 for n in c.values() if n > 1)
        return {
            "tried": killed,
            "runs": runs,
            "done": sum(1 for r in results if r.status == "done"),
            "run_errors_surfaced": len(failures),
            "resumes": resumed,
            "lost": lost,
            "duplicated": dup,
            "bad": lost + dup,
            "samples": failures[:5],
            "error_kinds": dict(Counter(f.split(": ")[1] for f in failures)),
        }
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            from openheim.stores import open_store

            store = open_store(POSTGRES_URL, namespace=ns)
            for key in await store.list():
                await store.delete(key)
            for log in await store.list_logs():
                await store.delete_log(log)
            await store.aclose()
        await wf.aclose()


def pg_drops(runs: int = 40, interval: float = 0.4) -> dict[str, Any]:
    """Workflow runs on PostgreSQL while their connections are terminated every ``interval`` s."""
    return asyncio.run(_pg_drops(runs, interval))


# ---- 3. a model endpoint that times out, answers 500s, or cuts streams --------------------

_MODES = ("ok", "500-then-ok", "500-always", "timeout", "cut-stream", "reset-then-ok", "garbage")


def _fake_openai(port: int, ready: threading.Event, stopping: threading.Event) -> None:
    """A fake OpenAI Chat Completions server on loopback (raw asyncio, HTTP/1.1)."""
    attempts: Counter[str] = Counter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            prompt = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
            mode, _, _ = prompt.partition(" ")
            attempts[prompt] += 1
            n = attempts[prompt]
            stream = bool(body.get("stream"))
            text = f"answer to {prompt}"
            if mode == "500-always" or (mode == "500-then-ok" and n == 1):
                msg = b'{"error": {"message": "internal", "type": "server_error"}}'
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(msg)}\r\n\r\n".encode()
                    + msg
                )
            elif mode == "timeout":
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(5)
                return
            elif mode == "reset-then-ok" and n == 1:
                writer.transport.abort()
                return
            elif mode == "garbage":
                msg = b"<html>not json"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(msg)}\r\n\r\n".encode()
                    + msg
                )
            elif stream:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                words = text.split(" ")
                if mode == "cut-stream":
                    words = words[:2]
                for i, w in enumerate(words):
                    chunk = {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "model": "fake",
                        "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}}],
                    }
                    data = f"data: {json.dumps(chunk)}\n\n".encode()
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    await writer.drain()
                if mode == "cut-stream":
                    writer.transport.abort()  # mid-stream: no finish reason, no [DONE]
                    return
                end = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "model": "fake",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                for data in (f"data: {json.dumps(end)}\n\n".encode(), b"data: [DONE]\n\n"):
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                if mode == "cut-stream":
                    writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"id": ')
                    await writer.drain()
                    writer.transport.abort()
                    return
                msg = json.dumps(
                    {
                        "id": "c1",
                        "object": "chat.completion",
                        "model": "fake",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(msg)}\r\n\r\n".encode()
                    + msg
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        await asyncio.to_thread(stopping.wait)
        server.close()

    asyncio.run(serve())


async def _model_faults(n: int, port: int) -> dict[str, Any]:
    import openheim as oh
    from openheim.errors import ModelError
    from openheim.models.openai import OpenAIModel
    from openheim.stores import StoreHistory, open_store

    folder = Path(tempfile.mkdtemp(prefix="openheim-soak-model-"))
    store = open_store(f"sqlite://{folder / 'state.db'}")
    model = OpenAIModel(
        "fake",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="sk-fake",
        max_retries=2,
        timeout=0.5,
        sleep=lambda s: asyncio.sleep(min(s, 0.01)),
    )
    agent = oh.Agent(model, history=StoreHistory(store, namespace="faults"))
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    expected: dict[str, list[str]] = {}
    rng = random.Random(5)
    try:
        for i in range(n):
            mode = _MODES[i % len(_MODES)]
            stream = rng.random() < 0.5
            session = f"sess-{i % 7}"
            prompt = f"{mode} #{i}"
            should_fail = mode in ("500-always", "timeout", "cut-stream", "garbage")
            try:
                if stream:
                    from openheim.agent.events import result_of

                    res = await result_of(agent.stream(prompt, session=session))
                else:
                    res = await agent.run(prompt, session=session)
                ok = True
                outcomes[f"{mode}: answered"] += 1
                if res.output != f"answer to {prompt}":
                    bad.append(f"{prompt}: wrong answer {res.output!r}")
            except ModelError as exc:
                ok = False
                outcomes[f"{mode}: {type(exc).__name__}"] += 1
                if not str(exc):
                    bad.append(f"{prompt}: an error with no message")
            except Exception as exc:  # anything that is not a documented ModelError
                ok = False
                outcomes[f"{mode}: UNDOCUMENTED {type(exc).__name__}"] += 1
                bad.append(f"{prompt}: {type(exc).__name__}: {exc}")
            if ok == should_fail:
                bad.append(f"{prompt} ({'stream' if stream else 'plain'}): ok={ok}")
            if ok:
                expected.setdefault(session, []).extend([prompt, f"answer to {prompt}"])
            held = [m.content for m in await agent.history.load(session)]
            if held != expected.get(session, []):
                bad.append(
                    f"{session} after {prompt}: {held[-4:]} != {expected.get(session, [])[-4:]}"
                )
    finally:
        await model.aclose() if hasattr(model, "aclose") else None
        await store.aclose()
    return {
        "tried": n,
        "survived": n - len(bad),
        "bad": len(bad),
        "outcomes": dict(sorted(outcomes.items())),
        "problems": bad[:10],
    }


def model_faults(n: int = 70) -> dict[str, Any]:
    """``n`` agent runs (plain and streaming) against a misbehaving OpenAI-style endpoint."""
    from soaklib import free_port

    port = free_port()
    ready, stopping = threading.Event(), threading.Event()
    t = threading.Thread(target=_fake_openai, args=(port, ready, stopping), daemon=True)
    t.start()
    ready.wait(10)
    try:
        return asyncio.run(_model_faults(n, port))
    finally:
        stopping.set()
        t.join(5)


# ---- 4. a full disk under the SQLite store -----------------------------------------------

_DISK_CHILD = r"""
import asyncio, json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # writes past the limit fail with EFBIG
limit = int(sys.argv[2])
if limit:  # 0: the file system itself is small (a tmpfs), no rlimit
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from openheim.stores import open_store

async def main():
    store = open_store("sqlite://" + sys.argv[1])
    acked, err = [], None
    try:
        for i in range(100000):
            value = (f"value-{i}-".encode() * 400)[: 2000 + (i % 7) * 300]
            if i % 3 == 2:
                await store.append("log", value)
                acked.append(["log", i, len(value)])
            else:
                await store.put(f"k{i}", value)
                acked.append(["kv", i, len(value)])
    except Exception as exc:
        err = [type(exc).__module__ + "." + type(exc).__name__, str(exc)]
    try:
        await store.aclose()
    except Exception as exc:
        err = err or ["close", str(exc)]
    print(json.dumps({"acked": acked, "error": err}))

asyncio.run(main())
"""


def full_disk(limit_bytes: int = 256 * 1024, trials: int = 3) -> dict[str, Any]:
    """Fill the disk under a SQLite store in a child process: a clear error, no damage.

    Odd trials mount a tmpfs of 384 KB (root with mount rights: a real ENOSPC);
    the others, and every trial where mounting is refused, cap the child's file
    size with RLIMIT_FSIZE (EFBIG), which needs neither.
    """
    problems: list[str] = []
    errors: list[str] = []
    kinds: list[str] = []
    for t in range(trials):
        folder = Path(tempfile.mkdtemp(prefix="openheim-soak-disk-"))
        # Every other trial on a real full file system (ENOSPC) where a tmpfs can be
        # mounted (root with CAP_SYS_ADMIN); else, and on the others, RLIMIT_FSIZE (EFBIG).
        tmpfs = t % 2 == 1 and _mount_tmpfs(folder, "384k")
        kinds.append("tmpfs ENOSPC" if tmpfs else "RLIMIT_FSIZE")
        db = folder / "state.db"
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _DISK_CHILD,
                    str(db),
                    "0" if tmpfs else str(limit_bytes + t * 37_000),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if tmpfs:  # room again, for the checks below
                subprocess.run(["mount", "-o", "remount,size=16m", str(folder)], check=True)
            _check_full_disk(t, proc, db, problems, errors)
        finally:
            if tmpfs:
                subprocess.run(["umount", str(folder)], check=False)
    return {
        "tried": trials,
        "survived": trials - len({p.split(":")[0] for p in problems}),
        "bad": len(problems),
        "kinds": kinds,
        "errors": errors[:3],
        "problems": problems[:10],
    }


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return proc.returncode == 0


def _check_full_disk(
    t: int, proc: subprocess.CompletedProcess[str], db: Path, problems: list[str], errors: list[str]
) -> None:
    import sqlite3

    if proc.returncode != 0:
        problems.append(f"trial {t}: child died {proc.returncode}: {proc.stderr[-500:]}")
        return
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    err = out["error"]
    if err is None:
        problems.append(f"trial {t}: the limit was never hit")
        return
    errors.append(f"{err[0]}: {err[1]}")
    if err[0] != "openheim.errors.StorageError":
        problems.append(f"trial {t}: undocumented error {err[0]}: {err[1]}")
    con = sqlite3.connect(db)
    check = con.execute("PRAGMA integrity_check").fetchone()[0]
    con.close()
    if check != "ok":
        problems.append(f"trial {t}: integrity_check says {check}")

    async def verify(acked: list[list[Any]], t: int = t, db: Path = db) -> None:
        from openheim.stores import open_store

        store = open_store(f"sqlite://{db}")
        try:
            logs = [r for _, r in await store.read_log("log")]
            want_logs = [a for a in acked if a[0] == "log"]
            if len(logs) != len(want_logs):
                problems.append(f"trial {t}: {len(logs)} log records, {len(want_logs)} acked")
            for kind, i, n in acked:
                if kind == "kv":
                    got = await store.get(f"k{i}")
                    value = (f"value-{i}-".encode() * 400)[:n]
                    if got is None or got[0] != value:
                        problems.append(f"trial {t}: acked key k{i} lost or damaged")
            # Writable again once there is room.
            await store.put("after", b"room again")
            if (await store.get("after") or (b"",))[0] != b"room again":
                problems.append(f"trial {t}: not writable after the disk had room")
        finally:
            await store.aclose()

    asyncio.run(verify(out["acked"]))
