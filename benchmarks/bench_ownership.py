"""Ownership benchmarks: lease overhead, takeover, worker processes, cross-process latency.

Run: ``.venv/bin/python benchmarks/bench_ownership.py [--quick] [--only N]
[--pre-own COMMIT|DIR] [--per N] [--big N]``. About 2.5 minutes (``--quick``: about 30 s). Prints
markdown tables; never passes or fails on time. Every engine runs in a child process of
its own (``--child``), over ``SQLiteStorage`` + ``SQLiteTaskStore(storage)`` on one file
(the memory rows of 1 use ``MemoryStorage`` + ``MemoryTaskStore``). The task is
``EDIT_FIELD_DATA`` with ``addItems`` on every item of a collection (every item is
written), batch 500; each SQLite run gets a fresh copy of a template file, so every run
does the same work.

1. **Lease overhead**: one task's run time (``create_task`` to ``wait``, started engine)
   with leases, against the same engine with the ownership's per-batch fence made a
   no-op (the baseline: ``Ownership.fence`` returns the lease it holds, so no
   ``check_fence`` read and no in-batch renewal; the claim, the fenced ``update`` of the
   task after each batch, the release and the owner thread remain), against the engine
   with no fence at all (also ``update`` called unfenced), and against the
   pre-ownership engine (commit ``5eca6d0``, extracted with ``git archive`` and put
   first on ``PYTHONPATH``). Interleaved rounds, the order rotated each round; ratios
   are taken per round. Then the fence alone, timed in this process.
2. **Takeover after SIGKILL**: engine A runs a long task (a 0.15 s pause after each
   committed batch, outside its transaction), engine B is idle on the same file; A is
   killed at a random moment after its first committed batch, and the time from the
   kill to B's first committed batch is read from the store (polled every 2 ms). Case
   "pid": A's owner id names its pid on this host and its lease (30 s) outlasts the
   measurement, so only B's dead-owner check frees the task. Case "lease": A's owner id
   names another host (``otherhost:1:...``), so the pid check cannot tell it died, and
   B waits for the lease (2 s) to run out. Poll 0.2 s in both.
3. **Worker processes**: four tasks on four collections (``--per`` items each), run by
   1, 2 or 4 idle engine processes (one worker thread each, poll 0.1 s), and by one
   process with four worker threads: items/s from the first ``createdAt`` to the last
   ``finishedAt``; cores busy (the engines' CPU seconds / wall); each task's run time;
   the longest time a RUNNING task committed no batch (the parent polls every 10 ms);
   batches the engines retried after a ``StorageError`` (``database is busy`` once a
   wait for the write lock passed ``busy_timeout``), counted in their INFO logs.
4. **Cancel latency** across processes: a worker process runs a task (``--big`` items);
   the parent cancels it through its own (not started) engine on the file after its
   first batch; time from the call to the task's ``finishedAt`` (FAILED/CANCELLED).
   **Wake-up latency**: an idle worker process (poll 0.5 s, the default); the parent
   creates a task through its own engine at a random moment; time from its
   ``createdAt`` to its ``startedAt`` (RUNNING).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

BATCH = 500
SEED = 12
PRE_OWNERSHIP = "5eca6d0"


def spec(collection: str) -> dict[str, Any]:
    """The benchmark task: append ``"sale"`` to ``tags`` of every item of ``collection``."""
    return {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": collection,
            "fieldKey": "tags",
            "operations": {"addItems": ["sale"]},
        },
    }


def fill(storage: Any, collection: str, n: int) -> None:
    """Create ``collection`` with ``n`` small items, each with a ``tags`` array."""
    storage.create_collection(collection)
    for start in range(0, n, 10_000):
        storage.insert_items(
            collection,
            "LIVE",
            [
                {"_id": f"i{k:08d}", "tags": ["a", "b"], "name": f"item {k}"}
                for k in range(start, min(n, start + 10_000))
            ],
        )


# ------------------------------------------------------------------------- child side
# These run in child processes, on whichever taskengine is first on sys.path (the
# pre-ownership tree for the "pre" variant), so they use only the API both trees have.


def _open(db: str) -> tuple[Any, Any]:
    from taskengine.storage.sqlite import SQLiteStorage
    from taskengine.taskstore import SQLiteTaskStore

    storage = SQLiteStorage(db)
    return storage, SQLiteTaskStore(storage)


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _patch_variant(variant: str) -> None:
    """Take the fence out of the engine for the baseline variants."""
    if variant in ("nofence", "unfenced"):
        from taskengine._ownership import Ownership

        Ownership.fence = lambda self, hold, now: hold.lease  # type: ignore[method-assign]
    if variant == "unfenced":
        from taskengine.taskstore import MemoryTaskStore, SQLiteTaskStore

        for cls in (MemoryTaskStore, SQLiteTaskStore):
            original = cls.update

            def update(
                self: Any,
                task_id: str,
                change: Callable[[Any], Any],
                fence: Any = None,
                *,
                now: datetime | None = None,
                _original: Any = original,
            ) -> Any:
                return _original(self, task_id, change, None, now=now)

            cls.update = update  # type: ignore[method-assign]


def child_edit(cfg: dict[str, Any]) -> None:
    """Run the task once on a fresh copy of the data; report seconds from create to end."""
    import taskengine
    from taskengine.engine import TaskEngine
    from taskengine.storage import MemoryStorage
    from taskengine.taskstore import MemoryTaskStore

    if cfg.get("expect") and not taskengine.__file__.startswith(cfg["expect"]):
        raise RuntimeError(f"imported {taskengine.__file__}, expected {cfg['expect']}")
    _patch_variant(cfg["variant"])
    db = None
    if cfg["storage"] == "sqlite":
        db = os.path.join(cfg["workdir"], f"edit-{secrets.token_hex(4)}.db")
        shutil.copyfile(cfg["template"], db)
        storage, store = _open(db)
    else:
        storage, store = MemoryStorage(), MemoryTaskStore()
        fill(storage, "Items", cfg["n"])
    engine = TaskEngine(storage, task_store=store, batch_size=BATCH)
    engine.start()
    gc.collect()
    start = time.perf_counter()
    task = engine.create_task(spec("Items"))
    final = engine.wait(task.id, 600)
    seconds = time.perf_counter() - start
    engine.stop()
    if db is not None:
        storage.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    _say({"seconds": seconds, "items": final.items_succeeded, "status": final.status.value})


def child_owner(cfg: dict[str, Any]) -> None:
    """Engine A of the takeover case: create a long task, run it until killed."""
    from taskengine.engine import TaskEngine
    from taskengine.tasktypes.edit_field_data import EditFieldDataExecutor

    committed = EditFieldDataExecutor.committed
    pause = cfg["pause"]

    def slow_committed(self: Any, plan: Any, changes: Any, written: Any) -> None:
        committed(self, plan, changes, written)
        time.sleep(pause)  # after the batch's transaction: the write lock is free

    EditFieldDataExecutor.committed = slow_committed  # type: ignore[method-assign]
    storage, store = _open(cfg["db"])
    engine = TaskEngine(
        storage,
        task_store=store,
        lease=timedelta(seconds=cfg["lease"]),
        poll_interval=cfg["poll"],
        owner=cfg.get("owner"),
    )
    engine.start()
    task = engine.create_task(spec("Items"))
    _say({"task": task.id, "owner": engine.owner})
    sys.stdin.read()
    engine.stop()


def child_idle(cfg: dict[str, Any]) -> None:
    """An idle engine on the file: runs what it finds until its stdin closes."""
    from taskengine.engine import TaskEngine

    if cfg.get("log"):  # the engine's retries are logged at INFO
        handler = logging.FileHandler(cfg["log"])
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logging.getLogger("taskengine").addHandler(handler)
        logging.getLogger("taskengine").setLevel(logging.INFO)
    storage, store = _open(cfg["db"])
    engine = TaskEngine(
        storage,
        task_store=store,
        workers=cfg.get("workers", 1),
        lease=timedelta(seconds=cfg.get("lease", 30)),
        poll_interval=cfg["poll"],
    )
    engine.start()
    cpu = time.process_time()
    _say({"owner": engine.owner})
    sys.stdin.read()
    engine.stop()
    _say({"cpu": time.process_time() - cpu})


CHILDREN = {"edit": child_edit, "owner": child_owner, "idle": child_idle}


# ------------------------------------------------------------------------ parent side


class Child:
    """A benchmark child process speaking JSON lines on stdout."""

    def __init__(self, cfg: dict[str, Any], pythonpath: str | None = None) -> None:
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict[str, Any]:
        """The child's next message."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"child exited ({self.proc.returncode}) without answering")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> dict[str, Any]:
        """Close its stdin (it stops its engine) and return its last message."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        lines = self.proc.stdout.read().splitlines()
        self.proc.wait(60)
        return json.loads(lines[-1]) if lines else {}

    def kill(self) -> None:
        """SIGKILL it and reap it (so its pid no longer exists)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def children(cfgs: list[dict[str, Any]]) -> Iterator[list[Child]]:
    """Start children, yield them once each said it is ready; kill any left at the end."""
    started = [Child(cfg) for cfg in cfgs]
    try:
        for child in started:
            child.read()
        yield started
    finally:
        for child in started:
            child.kill()


def copy_db(template: Path, folder: Path, name: str) -> str:
    """A fresh copy of ``template``, with the task store's tables made."""
    db = folder / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, db)
    storage, _store = _open(str(db))  # the task tables, made before the children open it
    storage.close()
    return str(db)


def make_template(path: Path, collections: dict[str, int]) -> Path:
    """A SQLite file with the given collections (items only: no task tables)."""
    from taskengine.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(path)
    for name, n in collections.items():
        fill(storage, name, n)
    storage.close()
    return path


def pre_ownership_tree(source: str, folder: Path) -> str | None:
    """A directory holding the pre-ownership ``taskengine`` package, or ``None``."""
    if os.path.isdir(source):
        return os.path.abspath(source)
    repo = Path(__file__).resolve().parent.parent
    try:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", source, "taskengine"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(no pre-ownership rows: git archive {source} failed: {exc})", file=sys.stderr)
        return None
    target = folder / "pre-own"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+/3.11.4+: no warning on 3.12+
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)
    return str(target)


def _load() -> str:
    """The load averages (other work on the machine skews every figure)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """``median (min-max)``."""
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}-{fmt.format(max(values))})"
    )


# 1 ---------------------------------------------------------------------------------


def lease_overhead(
    folder: Path, template: Path, n: int, rounds: int, memory_rounds: int, pre: str | None
) -> None:
    """Part 1: interleaved rounds of each variant, each in a fresh child process."""
    variants = ["lease", "nofence", "unfenced"] + (["pre"] if pre else [])
    labels = {
        "lease": "with leases (this tree)",
        "nofence": "per-batch fence a no-op (baseline)",
        "unfenced": "no fence at all (also `update` unfenced)",
        "pre": f"pre-ownership engine ({PRE_OWNERSHIP})",
    }
    all_times: dict[str, dict[str, list[float]]] = {}
    print(f"## 1. lease overhead: EDIT_FIELD_DATA addItems, {n:,} items, batch {BATCH}\n")
    print(
        "| storage | engine | rounds | seconds, median (min-max) | items/s | "
        "time ÷ baseline's in the same round, median (min-max) | best ÷ baseline's best |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for storage, count in (("sqlite", rounds), ("memory", memory_rounds)):
        times: dict[str, list[float]] = {v: [] for v in variants}
        for number in range(count):
            order = variants[number % len(variants) :] + variants[: number % len(variants)]
            for variant in order:
                cfg = {
                    "mode": "edit",
                    "storage": storage,
                    "template": str(template),
                    "workdir": str(folder),
                    "n": n,
                    "variant": variant,
                    "expect": pre if variant == "pre" else None,
                }
                child = Child(cfg, pythonpath=pre if variant == "pre" else None)
                result = child.read()
                child.kill()
                assert result["items"] == n, result
                assert result["status"] == "COMPLETED", result
                times[variant].append(result["seconds"])
        all_times[storage] = times
        base = times["nofence"]
        for variant in variants:
            print(
                f"| {'SQLite' if storage == 'sqlite' else 'memory'} | {labels[variant]} "
                f"| {count} | {spread(times[variant])} "
                f"| {n / statistics.median(times[variant]):,.0f} "
                f"| {spread(_ratios(times[variant], base))} "
                f"| {min(times[variant]) / min(base):.3f} |"
            )
    if pre:
        print()
        for storage, times in all_times.items():
            print(
                f"{storage}: with leases ÷ pre-ownership, same round: "
                f"{spread(_ratios(times['lease'], times['pre']))}; best ÷ best "
                f"{min(times['lease']) / min(times['pre']):.3f}"
            )
    print(
        "\nThe per-batch fence alone (`Ownership.fence` inside `storage.atomic()`, no "
        "renewal due), in this process:\n"
    )
    print("| storage | µs per fence | a batch (with leases, median) | fence ÷ batch |")
    print("|---|---:|---:|---:|")
    for storage, times in all_times.items():
        micro = fence_cost(folder, template if storage == "sqlite" else None)
        batch = statistics.median(times["lease"]) / -(-n // BATCH)
        print(
            f"| {'SQLite' if storage == 'sqlite' else 'memory'} | {micro * 1e6:.1f} "
            f"| {batch * 1000:.2f} ms | {micro / batch:.2%} |"
        )
    print()


def _ratios(times: list[float], base: list[float]) -> list[float]:
    return [t / b for t, b in zip(times, base, strict=True)]


def fence_cost(folder: Path, template: Path | None, calls: int = 5000) -> float:
    """Seconds per ``Ownership.fence`` of a claimed task, inside one ``atomic()`` block
    (a copy of ``template`` on SQLite; memory when ``template`` is ``None``)."""
    from taskengine._ownership import Ownership
    from taskengine.engine import TaskEngine
    from taskengine.storage import MemoryStorage
    from taskengine.taskstore import MemoryTaskStore

    if template is None:
        storage, store = MemoryStorage(), MemoryTaskStore()
        fill(storage, "Items", 10)
    else:
        storage, store = _open(copy_db(template, folder, "fence.db"))
    try:
        task = TaskEngine(storage, task_store=store).create_task(spec("Items"))
        ownership = Ownership(store, "bench:1:fence", timedelta(seconds=30), True)
        now = datetime.now(timezone.utc)
        hold = ownership.claim(task.id, now)
        assert hold is not None
        best = float("inf")
        for _ in range(3):
            with storage.atomic():
                start = time.perf_counter()
                for _ in range(calls):
                    ownership.fence(hold, now)
                best = min(best, (time.perf_counter() - start) / calls)
        return best
    finally:
        if template is not None:
            storage.close()


# 2 ---------------------------------------------------------------------------------


def takeover(folder: Path, template: Path, rounds: int, rng: random.Random) -> None:
    """Part 2: kill the owner, time the idle engine's first committed batch."""
    from taskengine import _ownership

    poll = 0.2
    # B's engine looks for leases of exited local processes at most this often.
    dead_check = float(getattr(_ownership, "_DEAD_CHECK_EVERY", 5.0))
    cases = [
        ("pid (A on this host, lease 30 s)", 30.0, None),
        ("lease (A named `otherhost:1:...`, lease 2 s)", 2.0, "otherhost:1:abcd1234"),
    ]
    print(f"## 2. takeover after SIGKILL of the owner (poll {poll} s, {rounds} rounds)\n")
    print("| case | kill -> B's first batch, s: median | min | max | every round | target |")
    print("|---|---:|---:|---:|---|---|")
    for name, lease, owner in cases:
        latencies: list[float] = []
        retries = 0
        while len(latencies) < rounds:
            wait = rng.uniform(0, dead_check if owner is None else lease / 2)
            got = _takeover_round(folder, template, lease, poll, owner, wait)
            if got is None:
                retries += 1
                if retries > 3:
                    raise RuntimeError("engine B kept winning the first claim")
                continue
            latencies.append(got)
        if owner is None:
            target = f"<= dead-owner check period + P = {dead_check + poll:.1f} s"
        else:
            target = f"<= L + P = {lease + poll:.1f} s"
        every = ", ".join(f"{v:.2f}" for v in latencies)
        print(
            f"| {name} | {statistics.median(latencies):.3f} | {min(latencies):.3f} "
            f"| {max(latencies):.3f} | {every} | {target} |"
        )
    print()


def _takeover_round(
    folder: Path,
    template: Path,
    lease: float,
    poll: float,
    owner: str | None,
    wait: float,
) -> float | None:
    """Seconds from killing A, ``wait`` s after its first batch, to B's first batch."""
    db = copy_db(template, folder, "takeover.db")
    storage, store = _open(db)
    b = Child({"mode": "idle", "db": db, "poll": poll, "lease": lease})
    a = None
    try:
        b_owner = b.read()["owner"]
        a = Child(
            {"mode": "owner", "db": db, "poll": poll, "lease": lease, "owner": owner, "pause": 0.15}
        )
        hello = a.read()
        task_id, a_owner = hello["task"], hello["owner"]
        deadline = time.monotonic() + 30
        while True:
            task = store.get(task_id)
            held = store.lease_of(task_id)
            if held is not None and held.owner == b_owner:
                return None  # B claimed the new task first: not this measurement
            if task.items_succeeded > 0 and held is not None and held.owner == a_owner:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("engine A committed no batch")
            time.sleep(0.002)
        time.sleep(wait)  # random: the lease's age and B's next dead-owner check vary
        os.kill(a.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        a.kill()
        before = store.get(task_id).items_succeeded
        deadline = killed + lease + 30
        while time.monotonic() < deadline:
            task = store.get(task_id)
            if task.items_succeeded > before:
                seen = time.monotonic()
                held = store.lease_of(task_id)
                assert held is not None, task
                assert held.owner == b_owner, held
                return seen - killed
            time.sleep(0.002)
        raise RuntimeError("engine B never took the task over")
    finally:
        if a is not None:
            a.kill()
        b.kill()
        storage.close()


# 3 ---------------------------------------------------------------------------------


class WorkersRound(NamedTuple):
    """One run of the four tasks."""

    wall: float  # seconds from the first task's createdAt to the last one's finishedAt
    cpu: float  # CPU seconds the engine processes used meanwhile
    spans: list[float]  # each task's seconds from startedAt to finishedAt
    stall: float  # longest time a RUNNING task committed no batch (10 ms resolution)
    retries: int  # batches retried after a StorageError (here: database is busy)


def worker_processes(folder: Path, template: Path, per: int, rounds: int) -> None:
    """Part 3: four tasks on four collections, 1/2/4 processes (and 1 x 4 threads)."""
    configs = [
        ("1 process", 1, 1),
        ("2 processes", 2, 1),
        ("4 processes", 4, 1),
        ("1 process, 4 worker threads", 1, 4),
    ]
    results: dict[str, list[WorkersRound]] = {name: [] for name, _, _ in configs}
    for number in range(rounds):
        order = configs[number % len(configs) :] + configs[: number % len(configs)]
        for name, processes, threads in order:
            results[name].append(_workers_round(folder, template, per, processes, threads))
    total = 4 * per
    base = statistics.median(total / r.wall for r in results[configs[0][0]])
    print(
        f"## 3. worker processes: 4 tasks x {per:,} items on 4 collections, one file "
        f"({rounds} rounds; medians, min-max over rounds)\n"
    )
    print(
        "| engines | items/s (min-max) | vs 1 process | cores busy | one task's run, s "
        "(min-max) | longest stall of a running task, s | batches retried (busy) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in configs:
        rates = [total / r.wall for r in results[name]]
        busy = statistics.median(r.cpu / r.wall for r in results[name])
        spans = [span for r in results[name] for span in r.spans]
        print(
            f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
            f" | {statistics.median(rates) / base:.2f}x | {busy:.2f} "
            f"| {spread(spans, '{:.2f}')} | {max(r.stall for r in results[name]):.2f} "
            f"| {sum(r.retries for r in results[name])} |"
        )
    print()


def _workers_round(
    folder: Path, template: Path, per: int, processes: int, threads: int
) -> WorkersRound:
    from taskengine.engine import TaskEngine

    db = copy_db(template, folder, "workers.db")
    storage, store = _open(db)
    logs = [str(folder / f"worker{k}.log") for k in range(processes)]
    for log in logs:
        Path(log).unlink(missing_ok=True)
    cfgs = [{"mode": "idle", "db": db, "poll": 0.1, "workers": threads, "log": log} for log in logs]
    last: dict[str, tuple[int, float]] = {}  # a running task's count, and when it changed
    stall = 0.0
    try:
        with children(cfgs) as engines:
            parent = TaskEngine(storage, task_store=store)
            ids = [parent.create_task(spec(f"C{k}")).id for k in range(4)]
            deadline = time.monotonic() + 300
            while True:
                tasks = [store.get(task_id) for task_id in ids]
                now = time.monotonic()
                for task in tasks:
                    if task.status.value == "NEW":
                        continue
                    seen = last.get(task.id)
                    if seen is None:
                        last[task.id] = (task.items_succeeded, now)
                    elif seen[0] != task.items_succeeded or task.is_finished:
                        stall = max(stall, now - seen[1])
                        last[task.id] = (task.items_succeeded, now)
                if all(task.is_finished for task in tasks):
                    break
                if now > deadline:
                    raise RuntimeError("the tasks did not finish")
                time.sleep(0.01)
            cpu = sum(engine.close()["cpu"] for engine in engines)
    finally:
        storage.close()
    for task in tasks:
        assert task.status.value == "COMPLETED", task
        assert task.items_succeeded == per, task
    wall = max(t.finished_at for t in tasks) - min(t.created_at for t in tasks)
    spans = [(t.finished_at - t.started_at).total_seconds() for t in tasks]
    retries = sum(Path(log).read_text().count("storage error, retry") for log in logs)
    return WorkersRound(wall.total_seconds(), cpu, spans, stall, retries)


# 4 ---------------------------------------------------------------------------------


def latencies(folder: Path, template: Path, rounds: int, big: int, rng: random.Random) -> None:
    """Part 4: cancel across processes, and wake-up of an idle worker process."""
    from taskengine.engine import TaskEngine
    from taskengine.errors import StorageError

    db = copy_db(template, folder, "latency.db")
    storage, store = _open(db)
    parent = TaskEngine(storage, task_store=store)
    calls: list[float] = []  # rounds where the cancel landed while the task ran
    late: list[float] = []  # rounds where the task ended before the cancel got the lock
    cancels: list[float] = []
    runs: list[float] = []
    busy = 0
    try:
        with children([{"mode": "idle", "db": db, "poll": 0.1}]):
            for _ in range(rounds):
                task = parent.create_task(spec("Big"))
                while store.get(task.id).items_succeeded == 0:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.02))  # anywhere in a batch
                asked = time.time()
                try:
                    parent.cancel_task(task.id)
                except StorageError:  # waited longer than busy_timeout for the write lock
                    busy += 1
                call = time.time() - asked
                while not (final := store.get(task.id)).is_finished:
                    time.sleep(0.001)
                assert final.finished_at is not None
                assert final.started_at is not None
                if final.failures and final.failures[0].code == "CANCELLED":
                    calls.append(call)
                    cancels.append(final.finished_at.timestamp() - asked)
                else:  # it ran to its end before the cancel got the write lock
                    assert final.items_succeeded == big, final
                    late.append(call)
                    runs.append((final.finished_at - final.started_at).total_seconds())
        poll = 0.5
        wakes: list[float] = []
        with children([{"mode": "idle", "db": db, "poll": poll}]):
            for _ in range(rounds):
                time.sleep(rng.uniform(0, poll))  # anywhere in the worker's poll cycle
                task = parent.create_task(spec("Small"))
                while not (final := store.get(task.id)).is_finished:
                    time.sleep(0.005)
                assert final.started_at is not None
                wakes.append((final.started_at - final.created_at).total_seconds())
    finally:
        storage.close()
    print(f"## 4. cross-process latency ({rounds} rounds each), ms\n")
    ended = f"; those ran {spread(runs, '{:.2f}')} s" if runs else ""
    print(
        f"Cancel: a {big:,}-item task in a worker process, cancelled by the parent after "
        f"its first batch: CANCELLED in {len(cancels)} of {rounds} rounds; in "
        f"{rounds - len(cancels)} it ran to its end first{ended}. Cancel calls that "
        f"failed with `database is busy` (> 5 s): {busy}.\n"
    )
    print("| case | median | min | max | target |")
    print("|---|---:|---:|---:|---|")
    for name, values, target in (
        ("cancel landed: `cancel_task` call returns", calls, "-"),
        ("cancel landed: call -> FAILED/CANCELLED in the store", cancels, "-"),
        ("task ended first: `cancel_task` call returns", late, "-"),
        (f"create -> RUNNING (idle worker, poll {poll} s)", wakes, f"<= {poll * 1000:.0f}"),
    ):
        if not values:
            print(f"| {name} | - | - | - | {target} |")
            continue
        ms = [1000 * v for v in values]
        print(
            f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} | {target} |"
        )
    print()


# -----------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """Run the four parts and print markdown tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument(
        "--pre-own",
        default=PRE_OWNERSHIP,
        metavar="COMMIT|DIR",
        help="the pre-ownership tree (a commit of this repository, or a "
        "directory holding its taskengine package)",
    )
    parser.add_argument("--no-pre-own", action="store_true", help="skip the pre-ownership rows")
    parser.add_argument(
        "--only",
        type=int,
        choices=[1, 2, 3, 4],
        action="append",
        help="run only this part (repeatable)",
    )
    parser.add_argument(
        "--per", type=int, metavar="N", help="items per collection in 3 (default 50,000)"
    )
    parser.add_argument(
        "--big", type=int, metavar="N", help="items of the task cancelled in 4 (default 200,000)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        cfg = json.loads(args.child)
        CHILDREN[cfg["mode"]](cfg)
        return
    parts = set(args.only or [1, 2, 3, 4])
    quick = args.quick
    n = 20_000 if quick else 100_000
    per = args.per or (10_000 if quick else 50_000)
    rng = random.Random(SEED)
    began = time.perf_counter()
    print(
        f"{os.cpu_count()} cores; {'--quick' if quick else 'full'} run; "
        f"started {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {_load()}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if 1 in parts:
            pre = None if args.no_pre_own else pre_ownership_tree(args.pre_own, folder)
            edit = make_template(folder / "edit.db", {"Items": n})
            lease_overhead(folder, edit, n, 3 if quick else 9, 2 if quick else 7, pre)
        big = args.big or (100_000 if quick else 200_000)
        if parts & {2, 4}:
            items = make_template(folder / "items.db", {"Items": 50_000, "Big": big, "Small": 200})
        if 2 in parts:
            takeover(folder, items, 1 if quick else 4, rng)
        if 3 in parts:
            four = make_template(folder / "four.db", {f"C{k}": per for k in range(4)})
            worker_processes(folder, four, per, 1 if quick else 2)
        if 4 in parts:
            latencies(folder, items, 5 if quick else 10, big, rng)
    print(f"({time.perf_counter() - began:.0f} s in all; {_load()})")


if __name__ == "__main__":
    main(sys.argv[1:])
