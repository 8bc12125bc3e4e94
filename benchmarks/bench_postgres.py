"""Benchmark: the four task types on PostgreSQL against the same change written in SQL.

Run: ``.venv/bin/python benchmarks/bench_postgres.py [--items N] [--rounds R] [--quick]
[--dsn DSN] [--profile KIND] [--memory]``. Without a DSN (or ``TASKENGINE_TEST_POSTGRES``)
it starts a throwaway server as the tests do (``tests/pg_server.py``, plus
``shared_buffers = 256MB`` and autovacuum off, so no vacuum lands inside one side's
timing). ``--quick`` is 20k items and one round (well under a minute). It never passes
or fails on time; it fails only when the two sides do not end in the same state.

For each size, one *template* database holds a ``PostgresStorage`` collection ``Items``
(publish plugin on) of N items, loaded with ``COPY`` (each ``doc`` is the codec's text,
``admit_text``, exactly what ``insert_items`` stores), then ``VACUUM ANALYZE``\\d. Every
run gets a fresh identical copy (``CREATE DATABASE ... TEMPLATE``, untimed) and runs
one side:

* **engine**: a ``TaskEngine`` on ``PostgresStorage`` with a ``PostgresTaskStore`` sharing
  its database (each batch of 500 and its checkpoint commit together), started untimed
  (the publish scheduler's rebuild scan); timed from ``create_task`` until
  ``run_until_idle`` returns with the task COMPLETED;
* **SQL**: one hand-written statement on the same table in autocommit (``DELETE ...
  WHERE`` on the JSONB column; ``UPDATE ... SET doc = ...``: ``doc`` is the source of
  truth and ``data`` is generated from it, so the statement edits the text, keeping key
  order and the codec's compact form, specialised to this item shape).

After each run the table's count and a checksum over ``(id, doc)`` in id order are read;
the engine's and SQL's must be equal, byte for byte. Rounds are interleaved (engine,
SQL, engine, ...; the first side alternates per round), each side's best is kept, and
the ratio is engine time / SQL time. CPU is split into the engine process (its own
``time.process_time``) and the server (the backends of the run's database, read from
``/proc/<pid>/stat``), so the report says who spent the time; the CPU ratio, (engine
process + server CPU) / the statement's server CPU, is steadier than wall time on a
shared machine.

``--profile KIND`` runs one engine task of that type under cProfile and prints the top
functions by own time. ``--memory`` runs a task (COPY_FIELD_DATA, or each ``--kind``)
at N/10 and N items in a child process each and prints the Python heap peak
(tracemalloc) and the process RSS high-water mark of the task alone (after the engine
started, ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine
from taskengine.storage.codec import admit_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

BATCH = 500
# run_until_idle renews a task's lease only between batches (no heartbeat thread), and
# the filtered count a task starts with is one long step: 1M documents decoded and
# filtered in Python took over the default 30 s under tracemalloc on the loaded machine,
# and the task was left NEW. One engine runs here, nothing is to be taken over.
LEASE = timedelta(hours=1)
HALLOWEEN = {"holidays": {"$in": ["Halloween"]}}
DATE_JSON = '{"$date":"2030-01-01T00:00:00+00:00"}'  # the codec's form of WHEN

SPECS: dict[str, dict[str, Any]] = {
    "DELETE_BY_QUERY": {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": HALLOWEEN},
    },
    "COPY_FIELD_DATA": {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "sourceFieldKey": "fullName",
            "targetFieldKey": "fullNameCopy",
        },
    },
    "EDIT_FIELD_DATA": {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "filter": HALLOWEEN,
            "fieldKey": "tags",
            "operations": {
                "addItems": ["sale"],
                "removeItems": ["outdated"],
                "replaceItems": [{"from": "Goob", "to": "Good"}],
                "removeDuplicates": True,
            },
        },
    },
    "UPDATE_PUBLISH_STATUS": {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Items",
            "filter": HALLOWEEN,
            "operation": "SCHEDULE_PUBLISHED_STATUS",
            "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
    },
}

# The filter {"holidays": {"$in": ["Halloween"]}} on JSONB: the field is "Halloween" or an
# array holding it (jsonb @> a scalar matches both).
_HALLOWEEN_SQL = "data->'holidays' @> '\"Halloween\"'"
_WHERE = f"coll = %(coll)s AND env = 0 AND {_HALLOWEEN_SQL}"
# The edited tags in the codec's compact text: "Goob" replaced by "Good", "outdated"
# removed, "sale" added, duplicates removed keeping the first (this data holds strings
# only, whose jsonb text is the codec's).
_NEW_TAGS = (
    "(SELECT '[' || string_agg(v::text, ',' ORDER BY o) || ']' FROM ("
    " SELECT DISTINCT ON (v) v, o FROM ("
    "  SELECT CASE WHEN e = '\"Goob\"' THEN '\"Good\"'::jsonb ELSE e END, o"
    "  FROM jsonb_array_elements(data->'tags') WITH ORDINALITY AS a(e, o)"
    "  WHERE e <> '\"outdated\"'"
    "  UNION ALL SELECT '\"sale\"'::jsonb, 2147483647) AS x(v, o)"
    " ORDER BY v, o) AS d)"
)
_OLD_TAGS = (
    "(SELECT '[' || string_agg(e::text, ',' ORDER BY o) || ']'"
    " FROM jsonb_array_elements(data->'tags') WITH ORDINALITY AS a(e, o))"
)
HAND_SQL: dict[str, str] = {
    # Published only (the publish plugin's default): no status, null, or PUBLISHED.
    "DELETE_BY_QUERY": (
        f"DELETE FROM taskengine_items WHERE {_WHERE} AND (data->'_publishStatus' IS NULL"
        " OR data->'_publishStatus' IN ('null'::jsonb, '\"PUBLISHED\"'::jsonb))"
    ),
    # The new key goes last, as the engine's dict puts it (the target is absent here).
    "COPY_FIELD_DATA": (
        "UPDATE taskengine_items SET doc = left(doc, -1) || ',\"fullNameCopy\":'"
        " || (data->'fullName')::text || '}'"
        " WHERE coll = %(coll)s AND env = 0 AND data ? 'fullName'"
        " AND (data->'fullNameCopy') IS DISTINCT FROM (data->'fullName')"
    ),
    # Written only where the tags change, as the engine writes only changed items.
    "EDIT_FIELD_DATA": (
        f"UPDATE taskengine_items SET doc = replace(doc, '\"tags\":' || {_OLD_TAGS},"
        f" '\"tags\":' || {_NEW_TAGS})"
        f" WHERE {_WHERE} AND jsonb_typeof(data->'tags') = 'array'"
        f" AND {_OLD_TAGS} <> {_NEW_TAGS}"
    ),
    "UPDATE_PUBLISH_STATUS": (
        'UPDATE taskengine_items SET doc = left(doc, -1) || \',"_publishDate":'
        f"{DATE_JSON}}}'"
        f" WHERE {_WHERE} AND NOT data ? '_publishDate'"
    ),
}

_CHECKSUM = (
    "SELECT count(*), coalesce(md5(string_agg(md5(id || ':' || doc), '' ORDER BY id)), '')"
    " FROM taskengine_items WHERE coll = %s AND env = 0"
)
_TICK = os.sysconf("SC_CLK_TCK")


def make_doc(i: int) -> dict[str, Any]:
    """Item ``i``: half Halloween, every tenth (i % 10 == 5, a Halloween one) a draft."""
    item: dict[str, Any] = {
        "_id": f"{i:08d}",
        "holidays": ["Halloween"] if i % 2 else ["Easter"],
        "tags": ["Goob", "outdated", "x"],
        "fullName": f"Name {i}",
    }
    if i % 10 == 5:
        item["_publishStatus"] = "DRAFT"
    return item


# --------------------------------------------------------------------------- the server


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """The given server's DSN, or a throwaway server's (tests/pg_server.py, bench settings)."""
    from pg_server import PostgresServer

    if dsn:
        yield dsn
        return

    class BenchServer(PostgresServer):  # type: ignore[misc]
        def _configure(self) -> None:
            super()._configure()
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write("shared_buffers = 256MB\nautovacuum = off\nmax_wal_size = 4GB\n")

    with BenchServer() as started:
        yield started.dsn


def with_dbname(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead."""
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def admin(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``postgres`` database."""
    return psycopg.connect(with_dbname(dsn, "postgres"), autocommit=True)


def make_template(dsn: str, name: str, fill: Callable[[PostgresStorage, str], None]) -> str:
    """A new database ``name`` with both schemas, filled by ``fill(storage, dsn)``,
    vacuumed and analyzed, all its pages all-visible (:func:`settle`); its DSN."""
    with closing(admin(dsn)) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
    created = with_dbname(dsn, name)
    with PostgresStorage(created) as storage:
        PostgresTaskStore(storage)  # its tables, in every copy
        fill(storage, created)
    with closing(psycopg.connect(created, autocommit=True)) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    settle(created)
    return created


def settle(template: str) -> float:
    """VACUUM the template after a commit that flushes the WAL; the share of its items
    table's pages now all-visible.

    The throwaway server commits asynchronously, and a VACUUM right after the load
    cannot mark pages whose rows' commit is not flushed yet as all-visible: every page
    stayed "not all-visible" and every index-only read of keys went to the table too (a
    table autovacuum has been through is all-visible, as a user's would be).
    """
    with closing(psycopg.connect(template, autocommit=True)) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TEMPORARY TABLE flushed (a integer)")  # a write, flushed
        conn.execute("DROP TABLE flushed")
        conn.execute("VACUUM taskengine_items")
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT relpages, relallvisible FROM pg_class WHERE relname = 'taskengine_items'"
        ).fetchone()
    assert row is not None
    return float(row[1]) / max(float(row[0]), 1.0)


def copy_items(dsn: str, collection: str, docs: Iterator[dict[str, Any]]) -> None:
    """COPY items into an existing collection: the codec's text, as insert_items stores it
    (ids are ASCII here, stored as they are)."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        row = conn.execute(
            "SELECT id FROM taskengine_collections WHERE name = %s", (collection,)
        ).fetchone()
        assert row is not None
        with (
            conn.transaction(),
            conn.cursor().copy("COPY taskengine_items (coll, env, id, doc) FROM STDIN") as copy,
        ):
            for item in docs:
                item_id, text = admit_text(item)
                copy.write_row((row[0], 0, item_id, text))


def fill_items(n: int) -> Callable[[PostgresStorage, str], None]:
    """A filler of collection ``Items`` (publish plugin) with items 0..n-1."""

    def fill(storage: PostgresStorage, dsn: str) -> None:
        storage.create_collection("Items", publish_plugin=True)
        copy_items(dsn, "Items", (make_doc(i) for i in range(n)))

    return fill


@contextmanager
def fresh_copy(dsn: str, template: str) -> Iterator[str]:
    """A new database copied from ``template`` (a database name), dropped afterwards."""
    name = f"bench_run_{uuid.uuid4().hex[:8]}"
    with closing(admin(dsn)) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    try:
        yield with_dbname(dsn, name)
    finally:
        with closing(admin(dsn)) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --------------------------------------------------------------------------- measures


def server_cpu(dsn: str) -> float:
    """CPU seconds so far of the backends connected to ``dsn``'s database (this
    connection's own included; a benchmark reads it before and after and subtracts)."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(process_cpu(pid) for (pid,) in rows)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def checksum(dsn: str) -> tuple[int, str]:
    """(count, md5 over (id, doc) in id order) of collection ``Items``."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        coll = conn.execute("SELECT id FROM taskengine_collections WHERE name = 'Items'")
        row = coll.fetchone()
        assert row is not None
        found = conn.execute(_CHECKSUM, (row[0],)).fetchone()
    assert found is not None
    return int(found[0]), str(found[1])


class Timing:
    """Wall seconds, this process's CPU seconds and the server's CPU seconds of a run."""

    def __init__(self, wall: float, client: float, server: float) -> None:
        self.wall, self.client, self.server = wall, client, server


class ScanPath(PostgresStorage):
    """PostgresStorage without set-based batches: the engine reads and writes by id."""

    change_matching = None  # type: ignore[assignment]


def engine_run(
    dsn: str,
    kind: str,
    profile: cProfile.Profile | None = None,
    *,
    storage_class: type[PostgresStorage] = PostgresStorage,
    spec: dict[str, Any] | None = None,
) -> Timing:
    """One task of ``kind`` (``spec`` when given) through a started engine on the
    database (see the module), its items in a ``storage_class``."""
    with storage_class(dsn) as storage:
        store = PostgresTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, batch_size=BATCH, lease=LEASE)
        engine.run_until_idle()  # services up (the publish scheduler's rebuild), untimed
        before = server_cpu(dsn)
        cpu, start = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        task = engine.create_task(SPECS[kind] if spec is None else spec)
        engine.run_until_idle()
        if profile is not None:
            profile.disable()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        spent = server_cpu(dsn) - before
        done = engine.get_task(task.id)
        assert done.status.value == "COMPLETED", done.to_json()
        store.close()
    return Timing(wall, cpu, spent)


def sql_run(dsn: str, kind: str) -> Timing:
    """The hand-written statement of ``kind`` on the database, in autocommit."""
    return statement_run(dsn, HAND_SQL[kind])[0]


def statement_run(dsn: str, statement: str) -> tuple[Timing, int]:
    """One statement on the ``Items`` collection (``%(coll)s``) in autocommit; its timing
    and the rows it changed."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        row = conn.execute("SELECT id FROM taskengine_collections WHERE name = 'Items'")
        found = row.fetchone()
        assert found is not None
        pid = conn.info.backend_pid
        before = process_cpu(pid)
        cpu, start = time.process_time(), time.perf_counter()
        changed = conn.execute(statement, {"coll": found[0]}).rowcount
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        spent = process_cpu(pid) - before
    return Timing(wall, cpu, spent), changed


def compare(
    dsn: str, template: str, n: int, rounds: int, kinds: list[str]
) -> list[tuple[Any, ...]]:
    """Each task type of ``kinds``, engine against SQL, interleaved rounds; a row per type."""
    rows = []
    for kind in kinds:
        best: dict[str, Timing | None] = {"engine": None, "sql": None}
        states: dict[str, set[tuple[int, str]]] = {"engine": set(), "sql": set()}
        for round_ in range(rounds):
            sides = ["engine", "sql"] if round_ % 2 == 0 else ["sql", "engine"]
            for side in sides:
                with fresh_copy(dsn, template) as run:
                    timing = engine_run(run, kind) if side == "engine" else sql_run(run, kind)
                    states[side].add(checksum(run))
                print(
                    f"  {n:>9,} {kind:22} {side:6} {timing.wall:8.2f} s wall"
                    f" {timing.client:7.2f} s client CPU {timing.server:7.2f} s server CPU",
                    flush=True,
                )
                kept = best[side]
                if kept is None or timing.wall < kept.wall:
                    best[side] = timing
        assert len(states["engine"]) == 1, (kind, states)
        assert states["engine"] == states["sql"], (kind, states)
        engine, sql = best["engine"], best["sql"]
        assert engine is not None
        assert sql is not None
        count = next(iter(states["sql"]))[0]
        rows.append((n, kind, engine, sql, count))
    return rows


def report(rows: list[tuple[Any, ...]]) -> None:
    """The table of best times and ratios."""
    print()
    print(
        "| items | task type | engine items/s | SQL items/s | ratio | engine CPU client + server"
        " of wall | SQL server CPU of wall | CPU ratio | end state |"
    )
    print("|---:|---|---:|---:|---:|---|---|---:|---|")
    for n, kind, engine, sql, count in rows:
        print(
            f"| {n:,} | {kind} | {n / engine.wall:,.0f} | {n / sql.wall:,.0f} |"
            f" {engine.wall / sql.wall:.2f}x | {engine.client:.1f} s / {engine.server:.1f} s"
            f" of {engine.wall:.1f} s | {sql.server:.1f} s of {sql.wall:.1f} s |"
            f" {(engine.client + engine.server) / max(sql.server + sql.client, 1e-3):.2f}x |"
            f" equal ({count:,} items left) |"
        )


def profile_engine(dsn: str, template: str, kind: str) -> None:
    """One engine task under cProfile; the top functions by own time."""
    profile = cProfile.Profile()
    with fresh_copy(dsn, template) as run:
        timing = engine_run(run, kind, profile)
    print(
        f"\n{kind}: {timing.wall:.2f} s wall, {timing.client:.2f} s client CPU (profiled),"
        f" {timing.server:.2f} s server CPU"
    )
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


# --------------------------------------------------------------------------- memory


def memory_child(dsn: str, kind: str) -> None:
    """In a child: one task of ``kind``; prints the peaks of the task alone."""
    import tracemalloc

    with PostgresStorage(dsn) as storage:
        store = PostgresTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, batch_size=BATCH, lease=LEASE)
        engine.run_until_idle()
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        rss_start = _status("VmRSS")
        tracemalloc.start()
        task = engine.create_task(SPECS[kind])
        engine.run_until_idle()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        done = engine.get_task(task.id)
        assert done.status.value == "COMPLETED", done.to_json()
        store.close()
    print(f"{peak} {rss_start} {_status('VmHWM')}")


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def memory(dsn: str, sizes: list[int], kinds: list[str]) -> None:
    """Peak memory of one task per size and kind, each in a child process on a fresh copy."""
    print(
        "\n| items | task type | Python heap peak (tracemalloc) | RSS at start | RSS high-water |"
    )
    print("|---:|---|---:|---:|---:|")
    for n, kind in ((n, kind) for n in sizes for kind in kinds):
        template = make_template(dsn, f"bench_mem_{n}", fill_items(n))
        name = psycopg.conninfo.conninfo_to_dict(template)["dbname"]
        with fresh_copy(dsn, str(name)) as run:
            child = subprocess.run(
                [sys.executable, __file__, "--memory-child", run, "--kind", kind],
                capture_output=True,
                text=True,
                check=False,
                timeout=3600,
            )
            if child.returncode != 0:
                raise RuntimeError(f"the {kind} child at {n:,} items failed:\n{child.stderr}")
            out = child.stdout.split()
        peak, start, high = (int(v) for v in out[-3:])
        print(
            f"| {n:,} | {kind} | {peak / 2**20:.1f} MiB | {start / 2**20:.1f} MiB |"
            f" {high / 2**20:.1f} MiB |",
            flush=True,
        )
        with closing(admin(dsn)) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str]) -> None:
    """Parse arguments and run the comparison (or the profile, or the memory measure)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, action="append", help="items (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (best kept)")
    parser.add_argument("--quick", action="store_true", help="20k items, one round")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument("--kind", choices=sorted(SPECS), action="append", help="(repeatable)")
    parser.add_argument("--profile", choices=sorted(SPECS), help="profile one engine task")
    parser.add_argument("--memory", action="store_true", help="peak memory at N/10 and N")
    parser.add_argument("--memory-child", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, (args.kind or ["COPY_FIELD_DATA"])[0])
        return
    sizes = [20_000] if args.quick else (args.items or [100_000])
    rounds = 1 if args.quick else args.rounds
    with server(args.dsn) as dsn:
        if args.memory:
            kinds = args.kind or ["COPY_FIELD_DATA"]
            memory(dsn, sorted({max(1, sizes[-1] // 10), sizes[-1]}), kinds)
            return
        rows = []
        for n in sizes:
            started = time.perf_counter()
            template = make_template(dsn, f"bench_tmpl_{n}", fill_items(n))
            name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
            print(f"template of {n:,} items in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                if args.profile:
                    profile_engine(dsn, name, args.profile)
                    continue
                rows.extend(compare(dsn, name, n, rounds, args.kind or list(SPECS)))
            finally:
                with closing(admin(dsn)) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if rows:
            report(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
