"""`taskengine worker --workers N`: N worker processes under a supervisor that prefixes
their lines, restarts one that dies, stops them all on SIGTERM, and whose death stops
them too; every item changed exactly once whatever happens."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from cli_runner import (
    COPY_TASK,
    EDIT_Z_TASK,
    assert_edited_and_copied_once,
    make_tagged_db,
    queue_task,
    run_cli,
    started,
    task_store,
    wait_for_line,
    wait_until,
)

from taskengine.cli import EXIT_OK
from taskengine.cli._common import split_password
from taskengine.taskstore import SQLiteTaskStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals need POSIX")

ITEMS = 4_000
WORKER = ("--workers", "2", "--threads", "1", "--batch-size", "1", "--poll", "0.05")


def _owner_pid(store: SQLiteTaskStore, task_id: str) -> int | None:
    lease = store.lease_of(task_id)
    return None if lease is None else int(lease.owner.split(":")[1])


def _both_running(store: SQLiteTaskStore, ids: list[str]) -> dict[str, int] | None:
    """Each task's owner pid, once both are held by live claims of two processes."""
    pids = {task_id: _owner_pid(store, task_id) for task_id in ids}
    found = {task_id: pid for task_id, pid in pids.items() if pid is not None}
    if len(found) == 2 and len(set(found.values())) == 2:
        return found
    return None


def _resume_and_check(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--resume", "--quiet")
    assert code == EXIT_OK, err
    assert all(json.loads(line)["status"] == "COMPLETED" for line in out.splitlines() if line)
    assert_edited_and_copied_once(db, ITEMS)


def test_two_worker_processes_run_two_tasks_at_once_and_stop_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --workers 2 --threads 1, two tasks are held at once by two child processes
    (neither the supervisor); SIGTERM stops both cleanly, their tasks released."""
    db = make_tagged_db(tmp_path, ITEMS)
    ids = [queue_task(db, EDIT_Z_TASK), queue_task(db, COPY_TASK)]
    with started("worker", "--db", str(db), *WORKER) as supervisor, task_store(db) as store:
        owners = wait_until(lambda: _both_running(store, ids), "two tasks held at once")
        assert supervisor.pid not in owners.values()
        supervisor.proc.send_signal(signal.SIGTERM)
        code, out, err = supervisor.finish()
        assert code == EXIT_OK, (out, err)
        assert [store.lease_of(task_id) for task_id in ids] == [None, None]
    assert "Supervisor " in out
    assert "Stopped 2 worker processes." in out
    for number in (1, 2):
        assert f"[{number}] Worker " in out
        assert f"[{number}] Stopped." in out
    _resume_and_check(capsys, db)


def test_a_killed_worker_process_is_restarted_and_its_task_finishes_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL one worker process mid-task: the supervisor says so and starts another;
    the task goes on from its checkpoint, and every item is changed once."""
    db = make_tagged_db(tmp_path, ITEMS)
    ids = [queue_task(db, EDIT_Z_TASK), queue_task(db, COPY_TASK)]
    with started("worker", "--db", str(db), *WORKER) as supervisor, task_store(db) as store:
        owners = wait_until(lambda: _both_running(store, ids), "two tasks held at once")
        victim = owners[ids[0]]
        os.kill(victim, signal.SIGKILL)
        line = wait_for_line(supervisor.out, "exited with code -9; restarting in 0.5 s")
        number = line.split("]")[0] + "]"
        wait_for_line(supervisor.out, f"{number} Worker ")
        # The killed process's task is taken over (the owner check frees it at once).
        wait_until(
            lambda: (
                _owner_pid(store, ids[0]) not in (None, victim) or store.get(ids[0]).is_finished
            ),  # type: ignore[union-attr]
            "the killed process's task taken over",
        )
        supervisor.proc.send_signal(signal.SIGTERM)
        code, out, err = supervisor.finish()
        assert code == EXIT_OK, (out, err)
    _resume_and_check(capsys, db)


def test_worker_processes_stop_by_themselves_when_the_supervisor_is_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL the supervisor: each worker process sees it gone, stops after its batch
    and releases its task (so nothing waits for a lease to run out)."""
    db = make_tagged_db(tmp_path, ITEMS)
    ids = [queue_task(db, EDIT_Z_TASK), queue_task(db, COPY_TASK)]
    with started("worker", "--db", str(db), *WORKER) as supervisor, task_store(db) as store:
        wait_until(lambda: _both_running(store, ids), "two tasks held at once")
        supervisor.proc.send_signal(signal.SIGKILL)
        supervisor.proc.wait(timeout=60)
        wait_until(
            lambda: all(store.lease_of(task_id) is None for task_id in ids),
            "both tasks released by their orphaned worker processes",
        )
    _resume_and_check(capsys, db)


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        ("shop.db", ("shop.db", None)),
        ("postgresql://app:s%40cret@db:5432/shop", ("postgresql://app@db:5432/shop", "s@cret")),
        (
            "postgresql://app@db/shop?password=a%26b&sslmode=require",
            ("postgresql://app@db/shop?sslmode=require", "a&b"),
        ),
        (
            "postgres://db/shop?sslmode=require&password=x",
            ("postgres://db/shop?sslmode=require", "x"),
        ),
        ("postgresql://app@db/shop", ("postgresql://app@db/shop", None)),
    ],
)
def test_a_dsn_password_goes_to_the_environment_not_the_command_line(
    db: str, expected: tuple[str, str | None]
) -> None:
    """Worker processes get the DSN without its password (decoded into PGPASSWORD)."""
    assert split_password(db) == expected
