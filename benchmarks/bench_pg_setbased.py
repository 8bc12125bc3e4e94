"""Benchmark: DELETE_BY_QUERY on PostgreSQL, set-based batches against the scan path and SQL.

Run: ``.venv/bin/python benchmarks/bench_pg_setbased.py [--items N] [--rounds R]
[--quick] [--dsn DSN] [--sides set,sql] [--drafts]``. The setting is ``bench_postgres.py``'s (a
throwaway server without ``--dsn``, one template database per size, a fresh identical
copy per run, rounds interleaved, best of each side kept, the end states compared by
checksum), with up to three sides in the same run:

* **set**: a ``TaskEngine`` on ``PostgresStorage`` + ``PostgresTaskStore`` (one database,
  batches of 500): each batch is one ``DELETE`` over its key range
  (``PostgresStorage.change_matching``);
* **scan**: the same engine on a subclass with ``change_matching = None``, so the engine
  takes its scan path (read the page, delete by id), as before set-based batches;
* **SQL**: the hand-written ``DELETE ... WHERE`` of ``bench_postgres.py``.

``--drafts`` deletes the DRAFT items instead (a tenth of them, evenly spread;
``includeDraftItems``), against ``DELETE ... WHERE data->'_publishStatus' @>
'"DRAFT"'``. It reports engine time ÷ SQL time for both engine sides; it never passes or fails on
time, only when the sides do not end in the same state.

``make_template`` leaves its template all-visible (``bench_postgres.settle``); this
benchmark prints the share of all-visible pages.
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
    HAND_SQL,
    SPECS,
    ScanPath,
    Timing,
    admin,
    checksum,
    engine_run,
    fill_items,
    fresh_copy,
    make_template,
    server,
    settle,
    sql_run,
)

KIND = "DELETE_BY_QUERY"
DRAFTS = {
    "type": KIND,
    "deleteByQueryOptions": {
        "dataCollectionId": "Items",
        "filter": {"_publishStatus": "DRAFT"},
        "publishPluginOptions": {"includeDraftItems": True},
    },
}
DRAFTS_SQL = (
    "DELETE FROM taskengine_items WHERE coll = %(coll)s AND env = 0"
    " AND data->'_publishStatus' @> '\"DRAFT\"'"
)
SPEC: dict[str, Any] = SPECS[KIND]


SIDES: dict[str, Any] = {
    "set": lambda run: engine_run(run, KIND, spec=SPEC),
    "scan": lambda run: engine_run(run, KIND, storage_class=ScanPath, spec=SPEC),
    "sql": lambda run: sql_run(run, KIND),
}


def compare(dsn: str, template: str, n: int, rounds: int, names: list[str]) -> dict[str, Timing]:
    """Each side ``rounds`` times, interleaved (the order rotates per round); the best."""
    best: dict[str, Timing] = {}
    states: set[tuple[int, str]] = set()
    for round_ in range(rounds):
        turn = round_ % len(names)
        order = names[turn:] + names[:turn]
        for side in order:
            with fresh_copy(dsn, template) as run:
                timing = SIDES[side](run)
                states.add(checksum(run))
            print(
                f"  {n:>9,} {side:5} {timing.wall:8.2f} s wall {timing.client:7.2f} s client"
                f" CPU {timing.server:7.2f} s server CPU",
                flush=True,
            )
            if side not in best or timing.wall < best[side].wall:
                best[side] = timing
    assert len(states) == 1, states  # every side, every run: the same rows, byte for byte
    return best


def report(rows: list[tuple[int, dict[str, Timing]]]) -> None:
    """The table: wall times, ratios to SQL, and the CPU split."""
    print()
    print(
        "| items | SQL | scan path | set-based | scan ÷ SQL | set ÷ SQL | scan ÷ set"
        " | set CPU client + server | set CPU ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for n, best in rows:
        sql, scan, sets = best["sql"], best.get("scan"), best["set"]
        cpu_ratio = (sets.client + sets.server) / max(sql.client + sql.server, 1e-3)
        scanned = (
            ("-", "-", "-")
            if scan is None
            else (
                f"{scan.wall:.2f} s",
                f"{scan.wall / sql.wall:.1f}x",
                f"{scan.wall / sets.wall:.1f}x",
            )
        )
        print(
            f"| {n:,} | {sql.wall:.2f} s | {scanned[0]} | {sets.wall:.2f} s"
            f" | {scanned[1]} | {sets.wall / sql.wall:.1f}x"
            f" | {scanned[2]} | {sets.client:.2f} + {sets.server:.2f} s"
            f" | {cpu_ratio:.1f}x |"
        )


def main(argv: list[str]) -> None:
    """Parse arguments and run the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, action="append", help="items (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (best kept)")
    parser.add_argument("--quick", action="store_true", help="20k items, one round")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument(
        "--sides", default="set,scan,sql", help="comma-separated, of set, scan and sql"
    )
    parser.add_argument("--drafts", action="store_true", help="delete the DRAFT items (10%%)")
    args = parser.parse_args(argv)
    if args.drafts:
        global SPEC
        SPEC = DRAFTS
        HAND_SQL[KIND] = DRAFTS_SQL
    names = args.sides.split(",")
    if not {"set", "sql"} <= set(names) or not set(names) <= set(SIDES):
        parser.error("--sides: set and sql, and scan if wanted")
    sizes = [20_000] if args.quick else (args.items or [100_000])
    rounds = 1 if args.quick else args.rounds
    rows = []
    with server(args.dsn) as dsn:
        for n in sizes:
            started = time.perf_counter()
            template = make_template(dsn, f"bench_set_{n}", fill_items(n))
            visible = settle(template)
            name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
            print(
                f"template of {n:,} items in {time.perf_counter() - started:.1f} s"
                f" ({visible:.0%} of its pages all-visible)",
                flush=True,
            )
            try:
                rows.append((n, compare(dsn, name, n, rounds, names)))
            finally:
                with closing(admin(dsn)) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    report(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
