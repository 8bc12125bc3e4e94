"""Benchmark: rewrites on PostgreSQL, set-based batches against the scan path and SQL.

Run: ``.venv/bin/python benchmarks/bench_pg_updates.py [--items N] [--rounds R]
[--kind KIND] [--quick] [--dsn DSN]``. The setting is ``bench_postgres.py``'s (a
throwaway server without ``--dsn``, one template database per size, a fresh identical
copy per run, rounds interleaved, best of each side kept), for ``UPDATE_PUBLISH_STATUS``
(schedule a publish date on the Halloween half), ``COPY_FIELD_DATA`` (every item) and
``EDIT_FIELD_DATA`` (the Halloween half's tags: a replace, a remove, an add and
``removeDuplicates``), with four sides in the same run:

* **set**: a ``TaskEngine`` on ``PostgresStorage`` + ``PostgresTaskStore`` (one database,
  batches of 500): each batch is one ``UPDATE`` splicing the stored text
  (``PostgresStorage.change_matching``, :mod:`taskengine.storage._pgupdate`; the array
  edit's new text rebuilt from the ``jsonb`` elements, :mod:`taskengine.storage._pgedit`);
* **scan**: the same engine on a subclass with ``change_matching = None`` (read the page,
  change it in Python, write it back by id), as before;
* **sql**: the hand-written text-splicing ``UPDATE`` of ``bench_postgres.py`` (specialised
  to this item shape; the same bytes as the engine);
* **jsonb**: the ``UPDATE`` a user would write, ``SET doc = jsonb_set(data, ...)::text``:
  the same rows changed, but not the same text (jsonb's key order, ``": "`` and ``", "``
  separators, number forms), so its end state is not the others'.

The end states of set, scan and sql are compared by checksum (byte for byte), jsonb's
only by the number of rows it changed. It reports engine time ÷ SQL time; it never
passes or fails on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing
from typing import Any

import psycopg
from bench_postgres import (
    _NEW_TAGS,
    _OLD_TAGS,
    _WHERE,
    DATE_JSON,
    HAND_SQL,
    ScanPath,
    Timing,
    admin,
    checksum,
    engine_run,
    fill_items,
    fresh_copy,
    make_template,
    server,
    statement_run,
)

KINDS = ["UPDATE_PUBLISH_STATUS", "COPY_FIELD_DATA", "EDIT_FIELD_DATA"]
JSONB_SQL: dict[str, str] = {
    "UPDATE_PUBLISH_STATUS": (
        "UPDATE taskengine_items SET doc ="
        f" jsonb_set(data, '{{_publishDate}}', '{DATE_JSON}'::jsonb)::text"
        f" WHERE {_WHERE} AND (data->'_publishDate') IS DISTINCT FROM '{DATE_JSON}'::jsonb"
    ),
    "COPY_FIELD_DATA": (
        "UPDATE taskengine_items SET doc ="
        " jsonb_set(data, '{fullNameCopy}', data->'fullName')::text"
        " WHERE coll = %(coll)s AND env = 0 AND data ? 'fullName'"
        " AND (data->'fullNameCopy') IS DISTINCT FROM (data->'fullName')"
    ),
    "EDIT_FIELD_DATA": (
        f"UPDATE taskengine_items SET doc = jsonb_set(data, '{{tags}}', {_NEW_TAGS}::jsonb)::text"
        f" WHERE {_WHERE} AND jsonb_typeof(data->'tags') = 'array'"
        f" AND {_OLD_TAGS} <> {_NEW_TAGS}"
    ),
}


SIDES: dict[str, Any] = {
    "set": lambda run, kind: (engine_run(run, kind), None),
    "scan": lambda run, kind: (engine_run(run, kind, storage_class=ScanPath), None),
    "sql": lambda run, kind: statement_run(run, HAND_SQL[kind]),
    "jsonb": lambda run, kind: statement_run(run, JSONB_SQL[kind]),
}


def compare(dsn: str, template: str, n: int, rounds: int, kind: str) -> dict[str, Timing]:
    """Each side ``rounds`` times, interleaved (the order rotates per round); the best."""
    best: dict[str, Timing] = {}
    states: set[tuple[int, str]] = set()
    changed: set[int] = set()
    names = list(SIDES)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for side in order:
            with fresh_copy(dsn, template) as run:
                timing, rows = SIDES[side](run, kind)
                if side == "jsonb":
                    changed.add(rows)
                else:
                    states.add(checksum(run))
                    if side == "sql":
                        changed.add(rows)
            print(
                f"  {n:>9,} {kind:22} {side:5} {timing.wall:8.2f} s wall"
                f" {timing.client:7.2f} s client CPU {timing.server:7.2f} s server CPU",
                flush=True,
            )
            if side not in best or timing.wall < best[side].wall:
                best[side] = timing
    assert len(states) == 1, states  # set, scan and sql: the same rows, byte for byte
    assert len(changed) == 1, changed  # jsonb changed as many rows as the others
    return best


def report(rows: list[tuple[int, str, dict[str, Timing]]]) -> None:
    """The table: wall times, ratios to SQL, and the CPU split."""
    print()
    print(
        "| items | task | SQL (text) | jsonb_set | scan path | set-based | scan ÷ SQL"
        " | set ÷ SQL | set ÷ jsonb_set | set CPU client + server | set CPU ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for n, kind, best in rows:
        sql, jsonb, scan, sets = best["sql"], best["jsonb"], best["scan"], best["set"]
        cpu_ratio = (sets.client + sets.server) / max(sql.client + sql.server, 1e-3)
        print(
            f"| {n:,} | {kind} | {sql.wall:.2f} s | {jsonb.wall:.2f} s | {scan.wall:.2f} s"
            f" | {sets.wall:.2f} s | {scan.wall / sql.wall:.2f}x | {sets.wall / sql.wall:.2f}x"
            f" | {sets.wall / jsonb.wall:.2f}x | {sets.client:.2f} + {sets.server:.2f} s"
            f" | {cpu_ratio:.2f}x |"
        )


def main(argv: list[str]) -> None:
    """Parse arguments and run the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, action="append", help="items (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (best kept)")
    parser.add_argument("--kind", action="append", choices=KINDS, help="task types")
    parser.add_argument("--quick", action="store_true", help="20k items, one round")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    args = parser.parse_args(argv)
    sizes = [20_000] if args.quick else (args.items or [100_000])
    rounds = 1 if args.quick else args.rounds
    rows = []
    with server(args.dsn) as dsn:
        for n in sizes:
            started = time.perf_counter()
            template = make_template(dsn, f"bench_upd_{n}", fill_items(n))
            name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
            print(f"template of {n:,} items in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                for kind in args.kind or KINDS:
                    rows.append((n, kind, compare(dsn, name, n, rounds, kind)))
            finally:
                with closing(admin(dsn)) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    report(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
