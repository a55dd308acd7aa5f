"""Batch mode: no-op steps/s with a checkpoint per step (1 and 2 worker processes), and a
3-step workflow with a simulated model call beside a published engine's figures.

    python benches/bench_batch.py                       # redis and nats, both parts
    python benches/bench_batch.py --queues redis --part steps
    python benches/bench_batch.py --queues nats,nats-generic --part steps   # fused vs generic

(a) ``steps``: R runs of a 10-step no-op workflow are submitted first; then W
worker processes (``Worker``, the code ``openheim worker`` runs) are started
and released together, and the clock runs until every run has ended. Every
step is claimed (fencing token), committed (compare-and-set + a record in the
run's log: one checkpoint per step) and its successor enqueued. Reported:
steps/s (median of the repeats), p50/p99 of one step (take to ack, in the
workers), the workers' CPU time per step, the 2-worker/1-worker ratio and the
5,000 steps/s target; each repeat prints the machine's load average (the
cores are shared with the queue server and anything else running). A third
setup, "2 apart", runs 2 workers on two queues of their own with half the runs
each: nothing is shared but the server and the cores, so its ratio to 1 worker
is the most two worker processes can get on this machine (the ceiling of the
2-worker ratio).

(b) ``model``: N runs of a 3-step workflow whose every step awaits a simulated
model call of fixed latency (``asyncio.sleep``), with the same number of steps
in flight in every mode (real-time: N runs gathered in one process under a
semaphore of C; batch: 2 worker processes of C/2 each). Per mode: run latency
p50/p99 (submit to end), runs/s, and memory per workflow in flight (the
processes' peak RSS growth, plus the growth of the queue server's memory for
batch modes, divided by the runs in flight), printed beside the published
engine's table (its figures are quoted, not measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import msgspec

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from openheim.workflow import Workflow  # noqa: E402

URLS = {
    "redis": os.environ.get("OPENHEIM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("OPENHEIM_BENCH_NATS_URL", "nats://127.0.0.1:4222"),
}
# "<engine>-generic": the same engine with the worker's generic backend (every claim and
# commit a few Store calls, as any store), the baseline of the engine's fused backend.
URLS.update({f"{k}-generic": v for k, v in list(URLS.items())})
MODEL_LATENCY = float(os.environ.get("OPENHEIM_BENCH_MODEL_LATENCY", "0.4"))

PUBLISHED = {  # the published engine's table, as the issue quotes it
    "real-time": ("1.2 s", "3.5 s", "45", "12 MB"),
    "redis batch": ("4.8 s", "9.1 s", "120", "8 MB"),
    "nats batch": ("3.9 s", "7.6 s", "150", "6 MB"),
}


class S(msgspec.Struct):
    n: int = 0
    text: str = ""


def noop_workflow() -> Workflow:
    wf = Workflow("bench-noop", state=S)
    for i in range(10):
        wf.step(lambda s: None, name=f"s{i}")
        if i:
            wf.edge(f"s{i - 1}", f"s{i}")
    return wf


def model_workflow() -> Workflow:
    wf = Workflow("bench-model", state=S)

    async def call(s: S) -> dict[str, Any]:
        await asyncio.sleep(MODEL_LATENCY)  # the simulated model call
        return {"n": s.n + 1}

    for name in ("plan", "draft", "review"):
        wf.step(call, name=name)
    wf.edge("plan", "draft")
    wf.edge("draft", "review")
    return wf


WORKFLOWS = {"noop": noop_workflow, "model": model_workflow}


# -- worker processes ----------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def worker_main(args: argparse.Namespace) -> None:
    import signal

    from openheim.workflow import Worker
    from openheim.workflow._worker import tune_gc

    wf = WORKFLOWS[args.workflow]()
    w = Worker(
        [wf],
        args.queue,
        queue_name=args.queue_name,
        concurrency=args.concurrency,
        take=args.take,
    )
    if args.generic:
        from openheim.workflow._backends import _Backend

        w.backend = _Backend(w.batch)
    w.latencies = []
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, w.stop)
    await w.queue.stats()  # connect before the clock starts
    if not os.environ.get("OPENHEIM_BENCH_NO_TUNE_GC"):
        tune_gc()  # as `openheim worker` does
    base = current_rss_mb()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the go signal
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    stats = await w.run(drain_timeout=5)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(w.latencies)
    conn = getattr(getattr(w.batch.store, "_s", None), "conn", None)
    wire = getattr(conn, "_wire", None)
    print(
        json.dumps(
            {
                "stats": msgspec.to_builtins(stats),
                "lat": lat[:: max(1, len(lat) // 20000)],
                "rss_growth_mb": max(0.0, rss_mb() - base),
                # CPU seconds the worker used from go to stop (idle polling included)
                "cpu_s": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                "sys_s": r1.ru_stime - r0.ru_stime,
                "writes": getattr(wire, "writes", 0),
                "pulls": getattr(w.queue, "_requests", 0),
            }
        ),
        flush=True,
    )
    await w.aclose()


def start_workers(
    n: int,
    queue: str,
    name: str,
    workflow: str,
    concurrency: int,
    generic: bool = False,
    take: int | None = None,
) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(n):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    "--queue",
                    queue,
                    "--queue-name",
                    name,
                    "--workflow",
                    workflow,
                    "--concurrency",
                    str(concurrency),
                    *(["--generic"] if generic else []),
                    *(["--take", str(take)] if take else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"a worker did not start: {line!r}")
    return procs


def profile(procs: list[subprocess.Popen[str]], label: str) -> list[subprocess.Popen[bytes]]:
    """With OPENHEIM_BENCH_PYSPY=<folder>: py-spy samples each worker process into
    <folder>/<label>-<i>.txt (collapsed stacks, idle frames left out)."""
    folder = os.environ.get("OPENHEIM_BENCH_PYSPY")
    if not folder:
        return []
    os.makedirs(folder, exist_ok=True)
    return [
        subprocess.Popen(
            [
                *("py-spy", "record", "--nonblocking", "--pid", str(p.pid), "--format", "raw"),
                *("--output", os.path.join(folder, f"{label}-{i}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, p in enumerate(procs)
    ]


def go(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()


def stop_workers(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        p.terminate()
    for p in procs:
        assert p.stdout is not None
        text, _ = p.communicate(timeout=60)
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        out.append(json.loads(lines[-1]) if lines else {})
    return out


async def server_memory(batch: Any) -> float:
    """The queue server's memory in MB (Redis used_memory; 0 where unknown)."""
    client = getattr(batch.queue, "client", None)
    if client is not None and hasattr(client, "info"):
        info = await client.info("memory")
        return float(info["used_memory"]) / 2**20
    return 0.0


async def server_cpu(batch: Any) -> float:
    """The queue server's CPU seconds so far (Redis INFO cpu; for NATS the /proc figures
    of the process listening on the URL's port, if this machine runs it; else nan)."""
    client = getattr(batch.queue, "client", None)
    if client is not None and hasattr(client, "info"):
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    url = getattr(batch.queue, "url", "")
    if url.startswith("nats"):
        from urllib.parse import urlsplit

        pid = listening_pid(urlsplit(url).port or 4222)
        if pid is not None:
            return process_cpu(pid)
    return float("nan")


def listening_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP ``port`` (Linux /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    if not inodes:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_ends(batch: Any, name: str, runs: set[str], timeout: float) -> dict[str, float]:
    """Run id -> the time its end was seen, for every run in ``runs``."""
    after = 0
    seen: dict[str, float] = {}
    end = time.monotonic() + timeout
    while len(seen) < len(runs):
        for seq, rec in await batch.ends_after(name, after):
            after = seq
            if rec.run_id in runs and rec.run_id not in seen:
                seen[rec.run_id] = time.monotonic()
        if time.monotonic() > end:
            raise TimeoutError(f"{len(runs) - len(seen)} runs did not end in {timeout}s")
        await asyncio.sleep(0.01)
    return seen


async def submit_all(wf: Workflow, queue: str, name: str, n: int) -> dict[str, float]:
    """Run id -> submit time (the runs live in namespace ``name``)."""
    out: dict[str, float] = {}

    async def one(i: int) -> None:
        h = await wf.submit({"n": 0, "text": str(i)}, queue=queue, queue_name=name, namespace=name)
        out[h.run_id] = time.monotonic()

    for start in range(0, n, 40):  # within the client's connection pool
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 40))))
    return out


async def cleanup(batch: Any, name: str) -> None:
    """Drop the queue and every record of the benchmark's runs (namespace ``name``)."""
    await batch.queue.purge()
    await batch.store.delete_log("wfend/" + name)
    client = getattr(batch.queue, "client", None)
    if client is not None and batch.store_url.startswith("redis"):
        keys = [k async for k in client.scan_iter(match=f"oh:{name}:*", count=5000)]
        for i in range(0, len(keys), 1000):
            await client.unlink(*keys[i : i + 1000])
        return
    s = batch.store.namespace(name)
    shared = getattr(s, "_s", None)
    if shared is not None and hasattr(shared, "kv_prefix"):  # NATS: purge by subject
        from openheim.stores._nats import encode_token

        nc = await shared.conn.connect()
        token = encode_token(name)
        for stream, prefix in (
            (shared.kv_stream, shared.kv_prefix),
            (shared.log_stream, shared.log_prefix),
        ):  # a filtered purge of a large stream can take the server a while
            req = json.dumps({"filter": f"{prefix}{token}.>"}).encode()
            await nc.request(f"$JS.API.STREAM.PURGE.{stream}", req, timeout=120)
        return
    for key in await s.list():
        await s.delete(key)
    for log in await s.list_logs():
        await s.delete_log(log)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


# -- (a) no-op steps/s ---------------------------------------------------------------------


async def steps_once(
    kind: str, workers: int, runs: int, queues: int = 1, shape: tuple[int, int | None] = (64, None)
) -> tuple[float, list[float], float, float]:
    """(steps/s, step latencies, worker CPU s per step, server CPU s per step); with
    ``queues`` 2, the runs and the workers are split over two queues of their own."""
    from openheim.workflow._batch import Batch

    url = URLS[kind]
    names = [f"bench{uuid.uuid4().hex[:8]}" for _ in range(queues)]
    wf = noop_workflow()
    batches = [Batch(url, queue_name=name) for name in names]
    share = runs // queues
    runs = share * queues
    try:
        submitted = [await submit_all(wf, url, name, share) for name in names]
        procs = []
        for name in names:
            procs += start_workers(
                workers // queues, url, name, "noop", shape[0], kind.endswith("-generic"), shape[1]
            )
        scpu0 = await server_cpu(batches[0])
        spies = profile(procs, f"{kind}-{workers}w{'-split' if queues > 1 else ''}")
        t0 = time.monotonic()
        go(procs)
        ends = await asyncio.gather(
            *(
                wait_ends(b, name, set(sub), 600)
                for b, name, sub in zip(batches, names, submitted, strict=True)
            )
        )
        elapsed = max(max(e.values()) for e in ends) - t0
        scpu = await server_cpu(batches[0]) - scpu0  # (includes the polling of wait_ends)
        reports = stop_workers(procs)
        for spy in spies:
            spy.wait(timeout=60)
        lat: list[float] = []
        cpu = 0.0
        for r in reports:
            lat += r.get("lat", [])
            cpu += r.get("cpu_s", float("nan"))
        if os.environ.get("OPENHEIM_BENCH_DEBUG"):
            steps = runs * 10
            writes = sum(r.get("writes", 0) for r in reports) / steps
            pulls = sum(r.get("pulls", 0) for r in reports) / steps
            sys_us = sum(r.get("sys_s", 0.0) for r in reports) / steps * 1e6
            print(
                f"    per step: {writes:.2f} writes, {pulls:.2f} pull requests, "
                f"{sys_us:.0f} us of the worker CPU in the kernel"
            )
        return runs * 10 / elapsed, lat, cpu / (runs * 10), scpu / (runs * 10)
    finally:
        for b, name in zip(batches, names, strict=True):
            await cleanup(b, name)
            await b.aclose()
        await wf.aclose()


# (workers, queues): 1 worker; 2 workers on one queue; 2 workers on a queue each, half the
# runs each (nothing shared but the server and the cores: the most 2 processes get here)
SETUPS = {"1": (1, 1), "2": (2, 1), "2 apart": (2, 2)}


async def part_steps(
    kinds: list[str], runs: int, repeats: int, shape: tuple[int, int | None] = (64, None)
) -> list[list[str]]:
    def each_setup() -> dict[str, list[Any]]:
        return {k: [] for k in SETUPS}

    rates = {k: each_setup() for k in kinds}
    lats = {k: each_setup() for k in kinds}
    cpus = {k: each_setup() for k in kinds}
    scpus = {k: each_setup() for k in kinds}
    for _ in range(repeats):
        for kind in kinds:  # interleaved, so drift hits every kind and count alike
            for setup, (w, queues) in SETUPS.items():
                try:
                    rate, lat, cpu, scpu = await steps_once(kind, w, runs, queues, shape)
                except Exception as exc:
                    print(f"{kind} with {setup} worker(s): {type(exc).__name__}: {exc}")
                    rates[kind][setup].append(float("nan"))
                    continue
                rates[kind][setup].append(rate)
                lats[kind][setup] += lat
                cpus[kind][setup].append(cpu)
                scpus[kind][setup].append(scpu)
                load = os.getloadavg()[0]
                print(
                    f"  {kind} {setup}: {rate:,.0f} steps/s, worker CPU {cpu * 1e6:.0f} "
                    f"us/step, server {scpu * 1e6:.0f} us/step (load average {load:.1f})",
                    flush=True,
                )
    # The cores are shared with the queue server and anything else running, and the
    # ratio moves from repeat to repeat: each repeat's own 1-worker and 2-worker runs
    # (made one after the other) give one ratio each.
    for kind in kinds:
        for setup in ("2", "2 apart"):
            each = [
                b / a for a, b in zip(rates[kind]["1"], rates[kind][setup], strict=True) if a and b
            ]
            if each:
                print(
                    f"  {kind} {setup}/1 per repeat: {', '.join(f'{r:.2f}x' for r in each)} "
                    f"(median {statistics.median(each):.2f}x)"
                )
    rows = []
    med_of = {k: {w: statistics.median(v) for w, v in rates[k].items()} for k in kinds}
    for kind in kinds:
        med = med_of[kind]
        base = med_of.get(kind + "-generic")
        for setup in SETUPS:
            rows.append(
                [
                    kind,
                    setup,
                    f"{med[setup]:,.0f}",
                    f"{pct(lats[kind][setup], 0.5) * 1000:.2f} ms",
                    f"{pct(lats[kind][setup], 0.99) * 1000:.2f} ms",
                    f"{statistics.median(cpus[kind][setup]) * 1e6:.0f} us"
                    if cpus[kind][setup]
                    else "",
                    f"{statistics.median(scpus[kind][setup]) * 1e6:.0f} us"
                    if scpus[kind][setup]
                    else "",
                    f"{med[setup] / base[setup]:.2f}x" if base else "",
                    f"{med[setup] / med['1']:.2f}x" if setup != "1" else "",
                    ("yes" if med[setup] >= 5000 else "NO") if setup == "2" else "",
                ]
            )
    return rows


# -- (b) the published engine's table -----------------------------------------------------


async def model_realtime(runs: int, concurrency: int) -> tuple[list[float], float, float]:
    wf = model_workflow()
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    base = current_rss_mb()
    peak = base

    async def one(i: int) -> None:
        nonlocal peak
        t = time.monotonic()
        async with sem:
            await wf.run({"n": 0, "text": str(i)})
        lat.append(time.monotonic() - t)
        peak = max(peak, current_rss_mb())

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(runs)))
    elapsed = time.monotonic() - t0
    return lat, runs / elapsed, (peak - base) / concurrency


async def model_batch(kind: str, runs: int, concurrency: int) -> tuple[list[float], float, float]:
    from openheim.workflow._batch import Batch

    url = URLS[kind]
    name = f"bench{uuid.uuid4().hex[:8]}"
    wf = model_workflow()
    batch = Batch(url, queue_name=name)
    procs = start_workers(2, url, name, "model", concurrency // 2)
    try:
        mem0 = await server_memory(batch)
        go(procs)
        t0 = time.monotonic()
        submitted = await submit_all(wf, url, name, runs)
        ends = await wait_ends(batch, name, set(submitted), 600)
        elapsed = max(ends.values()) - t0
        mem1 = await server_memory(batch)
        reports = stop_workers(procs)
        procs = []
        lat = [ends[r] - submitted[r] for r in submitted]
        rss = sum(r.get("rss_growth_mb", 0.0) for r in reports)
        return lat, runs / elapsed, (rss + max(0.0, mem1 - mem0)) / concurrency
    finally:
        if procs:
            stop_workers(procs)
        await cleanup(batch, name)
        await wf.aclose()
        await batch.aclose()


async def part_model(kinds: list[str], runs: int, concurrency: int) -> list[list[str]]:
    rows = []
    modes: list[tuple[str, Any]] = [("real-time", lambda: model_realtime(runs, concurrency))]
    for kind in kinds:
        modes.append((f"{kind} batch", lambda k=kind: model_batch(k, runs, concurrency)))
    for label, fn in modes:
        try:
            lat, rate, mb = await fn()
        except Exception as exc:
            print(f"{label}: {type(exc).__name__}: {exc}")
            continue
        pub = PUBLISHED[label]
        rows.append(
            [
                label,
                f"{pct(lat, 0.5):.2f} s",
                f"{pct(lat, 0.99):.2f} s",
                f"{rate:.0f}",
                f"{mb:.3f} MB",
                f"{pub[0]} / {pub[1]} / {pub[2]} / {pub[3]}",
            ]
        )
    return rows


def table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


async def main(args: argparse.Namespace) -> None:
    kinds = [k.strip() for k in args.queues.split(",") if k.strip()]
    if args.no_tune_gc:
        os.environ["OPENHEIM_BENCH_NO_TUNE_GC"] = "1"  # (the worker processes inherit it)
    if args.part in ("steps", "all"):
        print(
            f"(a) no-op steps with a checkpoint per step: {args.runs} runs x 10 steps, "
            f"median of {args.repeats}; each worker runs {args.worker_concurrency} at once, "
            f"taken {args.take or min(args.worker_concurrency, 128)} at a time"
        )
        rows = await part_steps(
            kinds, args.runs, args.repeats, (args.worker_concurrency, args.take)
        )
        table(
            [
                "queue",
                "workers",
                "steps/s",
                "p50 step",
                "p99 step",
                "CPU/step",
                "server CPU/step",
                "vs generic",
                "vs 1",
                ">=5,000/s",
            ],
            rows,
        )
        print(
            "CPU/step: worker processes' CPU time per step; server CPU/step: Redis INFO cpu, "
            "nats-server's /proc figures (both include other clients of a shared server); "
            "vs generic: steps/s over the same engine's generic backend (<engine>-generic); "
            "2 apart: 2 workers on a queue each, half the runs each (they share only the "
            "server and the cores: the most two processes can do here); "
            f"{os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}"
        )
    if args.part in ("model", "all"):
        print(
            f"\n(b) 3 steps of {MODEL_LATENCY:g} s simulated model calls; {args.model_runs} runs, "
            f"{args.concurrency} steps in flight"
        )
        rows = await part_model(kinds, args.model_runs, args.concurrency)
        table(["mode", "p50", "p99", "runs/s", "MB/workflow", "published p50/p99/runs/s/MB"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", default="redis,nats")
    parser.add_argument("--part", choices=["steps", "model", "all"], default="all")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=64,
        help="steps part: tasks each worker runs at once (default 64, the worker's default)",
    )
    parser.add_argument(
        "--take",
        type=int,
        default=None,
        help="tasks a worker takes at a time (default: its concurrency, at most 128: one "
        "group in flight; a quarter of it keeps several groups in flight)",
    )
    parser.add_argument("--model-runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    parser.add_argument("--queue-name", help=argparse.SUPPRESS)
    parser.add_argument("--workflow", default="noop", help=argparse.SUPPRESS)
    parser.add_argument("--generic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-tune-gc",
        action="store_true",
        help="workers keep Python's default garbage collector settings (`openheim worker` "
        "tunes them: openheim.workflow._worker.tune_gc)",
    )
    a = parser.parse_args()
    if a.worker:
        asyncio.run(worker_main(a))
    else:
        asyncio.run(main(a))
