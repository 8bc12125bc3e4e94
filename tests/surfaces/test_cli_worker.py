"""`taskengine worker`: runs the tasks other processes create, leaves live owners' tasks
alone, stops cleanly on SIGTERM and Ctrl-C with its tasks released and resumable."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_runner import (
    COPY_TASK,
    EDIT_Z_TASK,
    all_items,
    batch_done,
    exited_pid,
    make_tagged_db,
    owner_id,
    queue_task,
    run_cli,
    started,
    task_store,
    wait_for_line,
    wait_until,
)

from taskengine.cli import EXIT_BAD_INPUT, EXIT_OK

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="signals to a child need POSIX")

ITEMS = 10_000


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_runs_a_task_another_process_created_and_releases_it_when_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    """A worker takes a task created after it started; on SIGTERM or Ctrl-C it exits 0
    and leaves the task RUNNING, unleased, and resumable to an exact end."""
    db = make_tagged_db(tmp_path, ITEMS)
    with started("worker", "--db", str(db), "--batch-size", "1", "--poll", "0.05") as worker:
        first = wait_for_line(worker.out, "Worker ")
        owner = first.split()[1]
        assert owner.startswith(f"{socket.gethostname()}:{worker.pid}:")
        assert f"running tasks from {db}" in first
        task_id = queue_task(db, EDIT_Z_TASK)
        with task_store(db) as store:
            wait_until(lambda: batch_done(store, task_id), "the worker's first batch")
            lease = store.lease_of(task_id)
            assert lease is not None
            assert lease.owner == owner
            worker.proc.send_signal(signum)
            code, out, err = worker.finish()
            assert code == EXIT_OK, err
            assert store.lease_of(task_id) is None
            stopped = store.get(task_id)
        assert stopped is not None
        assert stopped.status.value == "RUNNING"
        assert 0 < stopped.items_succeeded < ITEMS
    assert f"started {task_id} EDIT_FIELD_DATA at " in out
    assert f"released {task_id} EDIT_FIELD_DATA at " in out
    assert "Stopped. Released 1 unfinished task (checkpointed)" in out

    code, out, err = run_cli(capsys, "run", "--db", str(db), "--resume", "--quiet")
    assert code == EXIT_OK, err
    final = json.loads(out)
    assert final["id"] == task_id
    assert final["status"] == "COMPLETED"
    assert final["itemsSucceeded"] == ITEMS
    assert all(item["tags"] == ["z"] for item in all_items(db))


@posix_only
def test_worker_prints_a_line_per_task_it_finishes(tmp_path: Path) -> None:
    """Tasks queued before and after the worker starts each get a `finished` line."""
    db = make_tagged_db(tmp_path, 2000)  # one task takes more than a few looks (0.1 s)
    before = [queue_task(db, COPY_TASK), queue_task(db, EDIT_Z_TASK)]
    with started("worker", "--db", str(db), "--poll", "0.05", "--batch-size", "1") as worker:
        wait_for_line(worker.out, "Worker ")
        assert "Found 2 unfinished tasks to resume." in wait_for_line(worker.out, "Found")
        after = queue_task(db, COPY_TASK)
        finished = {wait_for_line(worker.out, "finished ").split()[1] for _ in range(3)}
        assert finished == {*before, after}
        worker.proc.send_signal(signal.SIGINT)
        code, out, err = worker.finish()
    assert code == EXIT_OK, err
    assert "Stopped. No task was running." in out
    with task_store(db) as store:
        for task_id in (*before, after):
            task = store.get(task_id)
            assert task is not None
            assert task.status.value == "COMPLETED"


@posix_only
def test_worker_takes_over_lapsed_and_orphaned_tasks_but_not_live_ones(tmp_path: Path) -> None:
    """A task whose lease ran out, or whose owner process exited, is run by the worker; a
    task a live engine holds is left alone, and the worker says so."""
    db = make_tagged_db(tmp_path, 30)
    live, lapsed, orphaned = (queue_task(db, COPY_TASK) for _ in range(3))
    now = datetime.now(timezone.utc)
    alive = owner_id(os.getpid())
    with task_store(db) as store:
        assert store.claim(live, alive, now, timedelta(hours=1)) is not None
        assert store.claim(lapsed, alive, now - timedelta(hours=2), timedelta(hours=1))
        assert store.claim(orphaned, owner_id(exited_pid()), now, timedelta(hours=1))
        with started("worker", "--db", str(db), "--poll", "0.05") as worker:
            wait_for_line(worker.out, "Worker ")
            note = wait_for_line(worker.out, "left alone")
            finished = {wait_for_line(worker.out, "finished ").split()[1] for _ in range(2)}
            worker.proc.send_signal(signal.SIGTERM)
            code, out, err = worker.finish()
        assert code == EXIT_OK, err
        assert "Stopped." in out
        assert finished == {lapsed, orphaned}
        label = f"{socket.gethostname()}/{alive.split(':')[1]}"
        assert note == f"1 unfinished task(s) owned by a live engine ({label}) are left alone.\n"
        untouched = store.get(live)
        assert untouched is not None
        assert untouched.status.value == "NEW"
        lease = store.lease_of(live)
        assert lease is not None
        assert lease.owner == alive


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--workers", "0", "must be at least 1, got 0"),
        ("--threads", "0", "must be at least 1, got 0"),
        ("--threads", "two", "not a whole number: 'two'"),
        ("--lease", "0", "must be from 0.01 to 86400 seconds, got 0"),
        ("--lease", "nan", "must be from 0.01 to 86400 seconds, got nan"),
        ("--poll", "-1", "must be from 0.01 to 3600 seconds, got -1"),
        ("--poll", "soon", "not a number of seconds: 'soon'"),
    ],
)
def test_worker_rejects_bad_arguments_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, reason: str
) -> None:
    """A bad --workers, --threads, --lease or --poll is one usage line naming it (exit 2)."""
    db = make_tagged_db(tmp_path, 1)
    code, out, err = run_cli(capsys, "worker", "--db", str(db), f"{option}={value}")
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"taskengine worker: error: argument {option}: {reason}")


def test_worker_on_a_missing_db_exits_2_and_creates_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`worker` on a missing file is exit 2 with a hint, and creates nothing."""
    code, _, err = run_cli(capsys, "worker", "--db", str(tmp_path / "none.db"))
    assert code == EXIT_BAD_INPUT
    assert "no database at" in err
    assert not (tmp_path / "none.db").exists()
