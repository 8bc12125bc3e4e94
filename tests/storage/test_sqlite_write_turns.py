"""Fair turns at a SQLite file's write lock: a writer waiting behind a busy one gets in
between two of its transactions, instead of waiting on SQLite's growing sleeps."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskengine.storage._database import Database

_HOG = """
import sys, time
from taskengine.storage._database import Database
busy = Database(sys.argv[1])
print("ready", flush=True)
while True:
    with busy.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        time.sleep(0.002)  # a batch's work while it holds the lock
"""


def test_a_waiting_writer_gets_in_between_two_transactions_of_a_busy_one(
    tmp_path: Path,
) -> None:
    """While another process commits transaction after transaction (as an engine does,
    batch after batch), this process's write waits only a few of them: decided by the
    busy writer's progress (its rows), not by time. With SQLite's own busy handler alone
    it waited hundreds of them (seconds), often until its timeout."""
    path = tmp_path / "busy.db"
    other = Database(path)
    with other.transaction() as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    hog = subprocess.Popen(
        [sys.executable, "-c", _HOG, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hog.stdout is not None
        assert hog.stdout.readline().strip() == "ready"

        def hog_rows() -> int:
            with other.read() as conn:
                return int(conn.execute("SELECT count(*) FROM t WHERE x = 1").fetchone()[0])

        deadline = time.monotonic() + 30
        while hog_rows() < 20 and time.monotonic() < deadline:
            time.sleep(0.001)  # until the hog is committing back to back
        waits = []
        for _ in range(10):
            before = hog_rows()
            with other.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (2)")
                after = int(conn.execute("SELECT count(*) FROM t WHERE x = 1").fetchone()[0])
            waits.append(after - before)
        assert max(waits) <= 10, waits
    finally:
        hog.kill()
        hog.wait()
        if hog.stdout is not None:
            hog.stdout.close()
        other.close()


def test_a_stopped_waiter_only_slows_others_down(tmp_path: Path) -> None:
    """A connection that says it waits and never takes its turn (stopped by a debugger,
    say) delays another writer's begin by a bounded time; it never blocks it."""
    path = tmp_path / "stuck.db"
    stuck, writer = Database(path), Database(path)
    turns = stuck._turns
    if turns is None:
        pytest.skip("no flock on this platform")
    assert turns.queue()
    try:
        for _ in range(3):
            with writer.transaction() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    finally:
        turns.unqueue()
        stuck.close()
        writer.close()
