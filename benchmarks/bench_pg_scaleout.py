"""Benchmark: throughput of 1, 2 and 4 engine processes on one PostgreSQL server.

Run: ``.venv/bin/python benchmarks/bench_pg_scaleout.py [--items N] [--tasks T]
[--rounds R] [--quick] [--dsn DSN]``. Without a DSN it starts a throwaway server as
``bench_postgres.py`` does. ``--quick``: 8 tasks of 5k items, one round. It never passes
or fails on time; it fails when an item was not changed exactly once or a task did not
complete.

A template database holds T collections (``C0`` ...) of N items each (no publish
plugin, so an engine starts without a rebuild scan). For each process count P (the
order of the counts alternates per round), a fresh copy of it gets T COPY_FIELD_DATA
tasks (one per collection, created before any engine starts), then P engine processes
(``PostgresStorage`` + ``PostgresTaskStore`` sharing its database, batches of 500) are
started, connect, and wait; on "go" each runs ``run_until_idle`` (claiming tasks with
``SKIP LOCKED`` until none is left) and exits. Timed from "go" until the last process
exits; items/s counts every item of every task. The speed-up is items/s against one
process's in the same round.

What limits it is read from the machine, not guessed: the engine processes' CPU
(each one's ``time.process_time`` over its ``run_until_idle``), the server's CPU (the
postmaster's reaped children plus its live ones, from ``/proc``), both as cores busy
on average (CPU seconds / wall seconds; this machine has ``os.cpu_count()`` cores),
and ``pg_stat_activity`` sampled every 20 ms: the share of the run's client backends
that were running a statement (``active`` and not waiting), waiting for the engine
(``idle`` / ``idle in transaction``: the engine holds the turn), or waiting on a lock,
I/O or an LWLock inside the server.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_postgres import (
    admin,
    copy_items,
    fresh_copy,
    make_doc,
    make_template,
    process_cpu,
    server,
)

BATCH = 500
WAIT = 3600.0  # seconds: a bound on a run


def copy_spec(collection: str) -> dict[str, Any]:
    """COPY_FIELD_DATA of ``fullName`` to ``fullNameCopy`` over every item."""
    return {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": collection,
            "sourceFieldKey": "fullName",
            "targetFieldKey": "fullNameCopy",
        },
    }


def worker(dsn: str) -> None:
    """An engine process: connect, say ``ready``, wait for a line, run until idle."""
    with PostgresStorage(dsn) as storage:
        store = PostgresTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, batch_size=BATCH)
        print("ready", flush=True)
        sys.stdin.readline()
        cpu, start = time.process_time(), time.perf_counter()
        ran = engine.run_until_idle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - start
        store.close()
    print(f"{ran} {cpu} {wall}", flush=True)


def server_pid(dsn: str) -> int:
    """The postmaster's process id (the parent of a backend)."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        backend = conn.info.backend_pid
        stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])


def server_cpu_total(postmaster: int) -> float:
    """CPU seconds of the server so far: the postmaster, its reaped children (cutime,
    cstime) and its live children."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / tick
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return total + sum(process_cpu(int(pid)) for pid in children)


def sample_activity(dsn: str, stop: threading.Event, counts: collections.Counter[str]) -> None:
    """Count the states of the database's client backends every 20 ms until ``stop``."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        while not stop.wait(0.02):
            rows = conn.execute(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
            for state, wait_type, wait_event in rows:
                if state == "active" and wait_type is None:
                    counts["running"] += 1
                elif state == "active":
                    counts[f"waiting {wait_type}:{wait_event}"] += 1
                elif state in ("idle", "idle in transaction"):
                    counts["engine's turn"] += 1
                else:
                    counts[str(state)] += 1


def start_engines(script: str, target: str, processes: int) -> list[subprocess.Popen[str]]:
    """``processes`` engine processes (``script --worker target``), each past its
    ``ready`` line (started, waiting for the word to go on standard input)."""
    children = [
        subprocess.Popen(
            [sys.executable, script, "--worker", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", "an engine did not start"
    return children


def run(dsn: str, template: str, processes: int, tasks: int, items: int) -> dict[str, Any]:
    """One measure: ``processes`` engines on a fresh copy; figures and checks."""
    with fresh_copy(dsn, template) as db:
        with PostgresStorage(db) as storage:
            store = PostgresTaskStore(storage)
            creator = TaskEngine(storage, task_store=store)  # never started
            ids = [creator.create_task(copy_spec(f"C{n}")).id for n in range(tasks)]
            store.close()
        children = start_engines(__file__, db, processes)
        postmaster = server_pid(db)
        counts: collections.Counter[str] = collections.Counter()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_activity, args=(db, stop, counts))
        sampler.start()
        server_before = server_cpu_total(postmaster)
        start = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        ran, engine_cpu = [], 0.0
        for child in children:
            out, _ = child.communicate(timeout=WAIT)
            assert child.returncode == 0, out
            tasks_run, cpu, _ = out.split()[-3:]
            ran.append(int(tasks_run))
            engine_cpu += float(cpu)
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        time.sleep(0.2)  # the postmaster reaps the backends of the exited engines
        server_cpu = server_cpu_total(postmaster) - server_before
        with PostgresStorage(db) as storage:
            store = PostgresTaskStore(storage)
            for task_id in ids:
                task = store.get(task_id)
                assert task is not None
                assert task.status.value == "COMPLETED", task
            store.close()
        with closing(psycopg.connect(db, autocommit=True)) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE doc LIKE"
                " '%\"fullNameCopy\":\"Name %' AND doc NOT LIKE '%fullNameCopy%fullNameCopy%')"
                " FROM taskengine_items"
            ).fetchone()
        assert row is not None
        assert row[0] == row[1] == tasks * items, row
    return {
        "processes": processes,
        "wall": wall,
        "rate": tasks * items / wall,
        "engine_cpu": engine_cpu,
        "server_cpu": server_cpu,
        "ran": sorted(ran, reverse=True),
        "activity": counts,
    }


def report(results: dict[int, list[dict[str, Any]]]) -> None:
    """The table: best run per process count, CPU split and backend states."""
    base = max(r["rate"] for r in results[min(results)])
    print(f"\ncores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")
    print(
        "| engine processes | items/s | speed-up | engine CPU (cores busy) |"
        " server CPU (cores busy) | backends: running / engine's turn /"
        " waiting |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for processes in sorted(results):
        best = max(results[processes], key=lambda r: r["rate"])
        counts = best["activity"]
        total = sum(counts.values()) or 1
        waiting = sum(v for k, v in counts.items() if k.startswith("waiting"))
        top = ", ".join(
            f"{k[8:]} {v / total:.0%}" for k, v in counts.most_common() if k.startswith("waiting")
        )[:80]
        print(
            f"| {processes} | {best['rate']:,.0f} | {best['rate'] / base:.2f}x |"
            f" {best['engine_cpu']:.1f} s ({best['engine_cpu'] / best['wall']:.2f}) |"
            f" {best['server_cpu']:.1f} s ({best['server_cpu'] / best['wall']:.2f}) |"
            f" {counts['running'] / total:.0%} /"
            f" {counts[chr(101) + 'ngine' + chr(39) + 's turn'] / total:.0%} /"
            f" {waiting / total:.0%} {('(' + top + ')') if top else ''} |"
        )


def main(argv: list[str]) -> None:
    """Parse arguments and run the measure (or, with ``--worker``, be an engine)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=25_000, help="items per task")
    parser.add_argument("--tasks", type=int, default=8, help="tasks (collections)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--quick", action="store_true", help="5k items per task, one round")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument("--worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    items = 5_000 if args.quick else args.items
    rounds = 1 if args.quick else args.rounds
    counts = [int(p) for p in args.processes.split(",")]

    def fill(storage: PostgresStorage, dsn: str) -> None:
        for n in range(args.tasks):
            storage.create_collection(f"C{n}")
            copy_items(dsn, f"C{n}", (make_doc(i) for i in range(items)))

    print(f"{args.tasks} COPY_FIELD_DATA tasks of {items:,} items; {rounds} round(s)")
    results: dict[int, list[dict[str, Any]]] = {p: [] for p in counts}
    with server(args.dsn) as dsn:
        template = make_template(dsn, "bench_scaleout_tmpl", fill)
        name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
        try:
            for round_ in range(rounds):
                for processes in counts if round_ % 2 == 0 else counts[::-1]:
                    found = run(dsn, name, processes, args.tasks, items)
                    results[processes].append(found)
                    print(
                        f"  {processes} processes: {found['rate']:,.0f} items/s,"
                        f" {found['wall']:.1f} s, engine CPU {found['engine_cpu']:.1f} s,"
                        f" server CPU {found['server_cpu']:.1f} s, run_until_idle {found['ran']},"
                        f" {dict(found['activity'].most_common(4))}",
                        flush=True,
                    )
        finally:
            with closing(admin(dsn)) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    report(results)


if __name__ == "__main__":
    main(sys.argv[1:])
