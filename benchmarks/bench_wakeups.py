"""Wake-up and cancel latency across processes on PostgreSQL: NOTIFY against polling only.

Run: ``.venv/bin/python benchmarks/bench_wakeups.py [--quick] [--dsn DSN]``. Without a DSN
(or ``TASKENGINE_TEST_POSTGRES``) it starts a throwaway server as the tests do
(``tests/pg_server.py``). Prints a table of medians and 95th percentiles; never passes or
fails on time.

Two processes share one ``PostgresTaskStore`` database: a *runner* (a started engine, one
worker, polling every 0.5 s, its items in memory) and this *driver*, which creates and
cancels tasks through an engine it never starts and waits for them with a second,
started engine (``adopt=False``, so it runs nothing). Each mode runs the same seeded
schedule twice in one run, listening switched off in both engines (the baseline:
polling only) and then on:

1. wake-up: a 10-item task created by the driver (at a random phase of the runner's
   poll) until the runner starts it (``startedAt - createdAt``, both from the store), and
   from its end until the driver's ``wait()`` returns (``finishedAt`` to the return);
2. cancel: a long task cancelled by the driver at a random moment while the runner runs
   it, until the store shows it FAILED/CANCELLED (``finishedAt``) and until the driver's
   ``wait()`` returns; with fast batches (the built-in edit, 500 items in memory) and with
   slow ones (the same edit with 20 ms more in ``apply`` and 20 ms in ``committed``, as an
   executor calling another service would have);
3. the same cancel with the items in PostgreSQL, a ``PostgresStorage`` sharing the task
   store's database (each batch and its task update one transaction), by a second runner.

Each mode runs on a fresh database holding the same items. Timestamps are the store's
(milliseconds, truncated), read on one machine's clock.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from taskengine import (
    MemoryStorage,
    PostgresStorage,
    PostgresTaskStore,
    TaskEngine,
    TaskStatus,
)
from taskengine.storage.base import Storage, WriteResult
from taskengine.tasktype import BatchChanges, Executor, Plan, TaskOptions, TaskType
from taskengine.tasktypes import default_task_types

POLL = 0.5  # the engines' poll_interval (the default)
SEED = 20260501
SMALL = 10  # items of a wake-up task
SLOW_STEP = 0.02  # seconds added to a slow batch's apply, and again to its committed
WAIT = 60.0  # seconds: a bound on every wait


class Slow:
    """An executor that spends ``SLOW_STEP`` more in ``apply`` and in ``committed``."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """The inner plan."""
        return self.inner.plan(options, storage)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """The inner changes, late."""
        time.sleep(SLOW_STEP)
        return self.inner.apply(plan, items)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Tell the inner executor, then take a while (a post-commit call elsewhere)."""
        self.inner.committed(plan, changes, written)
        time.sleep(SLOW_STEP)


def bench_types() -> list[TaskType]:
    """The built-in types and ``SLOW_EDIT`` (the edit with slow batches)."""
    types = list(default_task_types().task_types)
    edit = next(t for t in types if t.name == "EDIT_FIELD_DATA")
    slow = attrs.evolve(
        edit, name="SLOW_EDIT", options_key="slowEditOptions", executor=Slow(edit.executor)
    )
    return [*types, slow]


def edit_spec(collection: str, value: str, kind: str = "EDIT_FIELD_DATA") -> dict[str, Any]:
    """An edit adding ``value`` to every item's ``tags``."""
    key = "editFieldDataOptions" if kind == "EDIT_FIELD_DATA" else "slowEditOptions"
    operations = {"addItems": [value]}
    return {
        "type": kind,
        key: {"dataCollectionId": collection, "fieldKey": "tags", "operations": operations},
    }


# -- the runner process ---------------------------------------------------------------


def fill(storage: Storage, items: int) -> None:
    """``Small`` (10 items) and ``Items`` (``items``), each item with empty ``tags``."""
    for name, count in (("Small", SMALL), ("Items", items)):
        storage.create_collection(name)
        for start in range(0, count, 10_000):
            chunk = range(start, min(count, start + 10_000))
            storage.insert_items(name, "LIVE", [{"_id": f"{i:07d}", "tags": []} for i in chunk])


def runner(dsn: str, listen: bool, items: int, shared: bool) -> None:
    """A started engine on the database until stdin closes; says ``ready`` when listening.

    Its items are in memory, or (``shared``) in the database already, through a
    ``PostgresStorage`` whose ``PgDatabase`` the task store shares.
    """
    storage: Storage
    if shared:
        storage = PostgresStorage(dsn)
        store = PostgresTaskStore(storage)
    else:
        storage = MemoryStorage()
        fill(storage, items)
        store = PostgresTaskStore(dsn)
    engine = TaskEngine(
        storage, task_store=store, task_types=bench_types(), poll_interval=POLL, listen=listen
    )
    engine.start()
    deadline = time.monotonic() + WAIT
    while listen and not engine.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", flush=True)
    sys.stdin.read()
    engine.stop()
    store.close()
    if isinstance(storage, PostgresStorage):
        storage.close()


# -- the driver -----------------------------------------------------------------------


@contextmanager
def running(dsn: str, listen: bool, items: int, shared: bool) -> Iterator[None]:
    """The runner process, started and ready, stopped afterwards."""
    flags = ["--listen", str(int(listen)), "--items", str(items), "--shared", str(int(shared))]
    process = subprocess.Popen(
        [sys.executable, __file__, "--runner", dsn, *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready", "the runner did not start"
        yield
    finally:
        process.stdin.close()
        process.wait(WAIT)
        process.stdout.close()


def wait_running(engine: TaskEngine, task_id: str) -> None:
    deadline = time.monotonic() + WAIT
    while engine.get_task(task_id).status is TaskStatus.NEW:
        assert time.monotonic() < deadline, "the runner never started the task"
        time.sleep(0.002)


def measure(dsn: str, listen: bool, rounds: int, items: int) -> dict[str, list[float]]:
    """Every latency of one mode, in milliseconds, by measure name."""
    found = measure_with(dsn, listen, rounds, items, shared=False)
    found.update(measure_with(dsn, listen, rounds, items, shared=True))
    return found


def measure_with(
    dsn: str, listen: bool, rounds: int, items: int, *, shared: bool
) -> dict[str, list[float]]:
    """The latencies of one mode with one runner (items in memory, or ``shared``)."""
    found: dict[str, list[float]] = {}

    def note(name: str, seconds: float) -> None:
        found.setdefault(name, []).append(seconds * 1000)

    rng = random.Random(SEED + shared)
    creator_store, waiter_store = PostgresTaskStore(dsn), PostgresTaskStore(dsn)
    creator = TaskEngine(MemoryStorage(), task_store=creator_store, task_types=bench_types())
    waiter = TaskEngine(
        MemoryStorage(),
        task_store=waiter_store,
        task_types=bench_types(),
        poll_interval=POLL,
        adopt=False,
        listen=listen,
    )
    waiter.start()
    try:
        with running(dsn, listen, items, shared):
            while listen and not waiter.listening:
                time.sleep(0.01)
            workloads = [("EDIT_FIELD_DATA", "shared")]
            if not shared:
                workloads = [("EDIT_FIELD_DATA", "fast"), ("SLOW_EDIT", "slow")]
            for n in range(rounds if not shared else 0):
                time.sleep(rng.uniform(0, POLL))
                task = creator.create_task(edit_spec("Small", f"w{n}"))
                done = waiter.wait(task.id, WAIT)
                returned = time.time()
                assert done.status is TaskStatus.COMPLETED
                assert done.started_at is not None
                assert done.finished_at is not None
                note("wake", (done.started_at - done.created_at).total_seconds())
                note("done-wait", returned - done.finished_at.timestamp())
            for kind, label in workloads:
                for n in range(rounds):
                    task = creator.create_task(edit_spec("Items", f"{label}{n}", kind))
                    wait_running(creator, task.id)
                    time.sleep(rng.uniform(0.05, 0.3))
                    asked = time.time()
                    creator.cancel_task(task.id)
                    ended = waiter.wait(task.id, WAIT)
                    returned = time.time()
                    assert ended.finished_at is not None
                    if ended.status is not TaskStatus.FAILED:
                        note(f"missed-{label}", 0)  # it completed before the cancel
                        continue
                    note(f"cancel-{label}-store", ended.finished_at.timestamp() - asked)
                    note(f"cancel-{label}-wait", returned - asked)
    finally:
        waiter.stop()
        creator_store.close()
        waiter_store.close()
    return found


MEASURES = (
    ("wake", "wake-up: created by the driver -> started by the runner"),
    ("done-wait", "finished by the runner -> the driver's wait() returns"),
    ("cancel-fast-store", "cancel, fast batches -> FAILED/CANCELLED in the store"),
    ("cancel-fast-wait", "cancel, fast batches -> the driver's wait() returns"),
    ("cancel-slow-store", "cancel, slow batches -> FAILED/CANCELLED in the store"),
    ("cancel-slow-wait", "cancel, slow batches -> the driver's wait() returns"),
    ("cancel-shared-store", "cancel, items in PostgreSQL -> FAILED/CANCELLED in the store"),
    ("cancel-shared-wait", "cancel, items in PostgreSQL -> the driver's wait() returns"),
)


def p95(values: list[float]) -> float:
    """The 95th percentile (of one value: that value)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def report(polling: dict[str, list[float]], notified: dict[str, list[float]]) -> None:
    print("| measure | polling median | polling p95 | NOTIFY median | NOTIFY p95 | median ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, title in MEASURES:
        before, after = polling.get(key, []), notified.get(key, [])
        if not before or not after:
            print(f"| {title} | - | - | - | - | - |")
            continue
        slow, fast = statistics.median(before), statistics.median(after)
        ratio = f"{slow / fast:.1f}x" if fast > 0 else "-"
        print(
            f"| {title} | {slow:.0f} ms | {p95(before):.0f} ms | {fast:.0f} ms "
            f"| {p95(after):.0f} ms | {ratio} |"
        )
    for mode, found in (("polling", polling), ("NOTIFY", notified)):
        samples = {key: len(found.get(key, [])) for key, _ in MEASURES}
        missed = {key: len(values) for key, values in found.items() if key.startswith("missed")}
        print(f"{mode}: samples {samples}; tasks that completed before their cancel {missed}")


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """The given server's DSN, or a throwaway server's (``tests/pg_server.py``)."""
    from pg_server import PostgresServer

    if dsn:
        yield dsn
        return
    with PostgresServer() as started:
        yield started.dsn


@contextmanager
def fresh_database(dsn: str, items: int) -> Iterator[str]:
    """A new database on the server of ``dsn`` holding the items (``fill``), dropped after."""
    from pg_server import create_database, drop_database

    name = f"bench_wakeups_{uuid.uuid4().hex[:8]}"
    created = create_database(dsn, name)
    try:
        with PostgresStorage(created) as storage:
            fill(storage, items)
        yield created
    finally:
        drop_database(dsn, name)


def main(argv: list[str]) -> None:
    """Run the benchmark (or, with ``--runner``, be the runner process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 40")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument("--runner", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--listen", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=200_000, help=argparse.SUPPRESS)
    parser.add_argument("--shared", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runner:
        runner(args.runner, bool(args.listen), args.items, bool(args.shared))
        return
    rounds = 10 if args.quick else 40
    print(f"{rounds} rounds per measure; poll_interval {POLL} s; {args.items} items")
    found: list[dict[str, list[float]]] = []
    with server(args.dsn) as dsn:
        for listen in (False, True):
            # A database of its own per mode: the second would otherwise meet the first's
            # dead row versions and longer items.
            with fresh_database(dsn, args.items) as database:
                found.append(measure(database, listen, rounds, args.items))
    report(*found)


if __name__ == "__main__":
    main(sys.argv[1:])
