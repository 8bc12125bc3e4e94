"""`taskengine tasks list|get|cancel`: across processes, bad input, read-only opening."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from cli_runner import (
    COPY_TASK,
    cli,
    executable,
    exited_pid,
    make_shop_db,
    owner_id,
    queue_task,
    run_cli,
    task_store,
    write,
)

from taskengine._slices import Slices
from taskengine.cli import EXIT_BAD_INPUT, EXIT_OK
from taskengine.engine import TaskEngine
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.taskstore import SQLiteTaskStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """'Items' (publish plugin, 30 items) and 'Plain' (see make_shop_db)."""
    return make_shop_db(tmp_path)


def test_a_queued_task_is_shown_and_cancelled_by_tasks_commands(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --no-wait` queues a task other commands see; `tasks cancel` cancels it."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    code, out, _ = run_cli(capsys, "run", "--db", str(db), "--no-wait", str(spec))
    assert code == EXIT_OK
    task_id = json.loads(out)["id"]
    code, out, _ = run_cli(capsys, "tasks", "get", task_id, "--db", str(db))
    assert code == EXIT_OK
    assert json.loads(out)["status"] == "NEW"
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(db))
    assert task_id in out
    assert "NEW" in out
    assert "1 of 1 task(s)" in out
    code, out, _ = run_cli(capsys, "tasks", "cancel", task_id, "--db", str(db))
    cancelled = json.loads(out)
    assert cancelled["status"] == "FAILED"
    assert cancelled["failures"] == [
        {"code": "CANCELLED", "description": cancelled["failures"][0]["description"]}
    ]
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(db))
    assert "FAILED (cancelled)" in out.splitlines()[2]


def test_tasks_queued_by_one_process_are_listed_shown_and_cancelled_by_others(
    db: Path, tmp_path: Path
) -> None:
    """Tasks queued by one process are listed, shown and cancelled by others."""
    spec = write(tmp_path / "t.json", COPY_TASK)
    ids = []
    for _ in range(3):
        queued = cli("run", "--db", str(db), "--no-wait", str(spec))
        assert queued.returncode == 0, queued.stderr
        ids.append(json.loads(queued.stdout)["id"])
    listed = cli("tasks", "list", "--db", str(db), "--json")
    assert listed.returncode == 0
    body = json.loads(listed.stdout)
    assert [t["id"] for t in body["tasks"]] == list(reversed(ids))
    assert body["metadata"] == {"count": 3, "offset": 0, "total": 3}
    table = cli("tasks", "list", "--db", str(db))
    assert table.returncode == 0
    assert all(i in table.stdout for i in ids)
    paged = json.loads(
        cli("tasks", "list", "--db", str(db), "--json", "--limit", "1", "--offset", "1").stdout
    )
    assert [t["id"] for t in paged["tasks"]] == [ids[1]]

    shown = cli("tasks", "get", ids[0], "--db", str(db))
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["status"] == "NEW"
    cancelled = cli("tasks", "cancel", ids[0], "--db", str(db))
    assert cancelled.returncode == 0
    task = json.loads(cancelled.stdout)
    assert task["status"] == "FAILED"
    assert task["failures"] == [
        {"code": "CANCELLED", "description": task["failures"][0]["description"]}
    ]
    again = json.loads(cli("tasks", "get", ids[0], "--db", str(db)).stdout)
    assert again == task


def test_tasks_list_shows_who_owns_each_unfinished_task(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OWNER column: host/pid of a live lease, why a task waits (never leased or
    released, lease ran out, owner exited), `-` for a finished task; the JSON has none."""
    waiting, owned, lapsed, orphaned, finished = (queue_task(db, COPY_TASK) for _ in range(5))
    now = datetime.now(timezone.utc)
    alive = owner_id(os.getpid())
    with task_store(db) as store:
        assert store.claim(owned, alive, now, timedelta(hours=1))
        assert store.claim(lapsed, alive, now - timedelta(hours=2), timedelta(hours=1))
        assert store.claim(orphaned, owner_id(exited_pid()), now, timedelta(hours=1))
    code, out, err = run_cli(capsys, "tasks", "cancel", finished, "--db", str(db))
    assert code == EXIT_OK, err
    code, out, err = run_cli(capsys, "tasks", "list", "--db", str(db))
    assert code == EXIT_OK, err
    lines = out.splitlines()
    header = lines[0]
    column = header.index("OWNER")
    assert header.split() == ["ID", "TYPE", "STATUS", "OWNER", "SUCCEEDED", "FAILED", "CREATED"]
    owners = {line.split()[0]: line[column:].split("  ")[0].strip() for line in lines[2:-1]}
    assert owners == {
        waiting: "waiting",
        owned: f"{socket.gethostname()}/{os.getpid()}",
        lapsed: "waiting (lease ran out)",
        orphaned: "waiting (owner exited)",
        finished: "-",
    }
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(db), "--json")
    listed = json.loads(out)["tasks"]
    for task in listed:
        code, shown, _ = run_cli(capsys, "tasks", "get", task["id"], "--db", str(db))
        assert task == json.loads(shown)  # the API's task JSON, no ownership added
    assert "lease" not in out.lower()
    assert "owner" not in out.lower()


def test_status_label_tells_cancelled_from_failed_and_pending() -> None:
    """The STATUS column says which FAILED task was cancelled and which cancel is pending."""
    from taskengine.cli.tasks import _status_label

    cancelled = {"status": "FAILED", "failures": [{"code": "CANCELLED"}], "cancelRequested": True}
    assert _status_label(cancelled) == "FAILED (cancelled)"
    assert _status_label({"status": "FAILED", "failures": [{"code": "WDE0025"}]}) == "FAILED"
    assert _status_label({"status": "RUNNING", "cancelRequested": True}) == (
        "RUNNING (cancel requested)"
    )
    assert _status_label({"status": "COMPLETED", "failures": []}) == "COMPLETED"


def test_tasks_get_of_an_unknown_id_says_not_found(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown task id is a clear 'not found' error."""
    code, _, err = run_cli(capsys, "tasks", "get", "nope", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "not found" in err


@pytest.mark.parametrize("action", ["get", "cancel"])
def test_tasks_get_and_cancel_of_an_unknown_id_exit_2_without_a_traceback(
    db: Path, action: str
) -> None:
    """`tasks get/cancel` of an unknown id is exit 2 'not found', nothing made up."""
    result = cli("tasks", action, "no-such-task", "--db", str(db))
    assert result.returncode == 2
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_tasks_get_of_an_unencodable_id_is_not_found(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    """`tasks get` with an id that is not valid Unicode is 'not found' (exit 2)."""
    code, _, err = run_cli(capsys, "tasks", "get", "x\udcff", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "not found" in err


def test_tasks_list_with_a_limit_of_0_exits_2_naming_the_limit(db: Path) -> None:
    """`tasks list --limit 0` is a clean exit 2 naming the limit."""
    result = cli("tasks", "list", "--db", str(db), "--limit", "0")
    assert result.returncode == 2
    assert "limit" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--offset", "99999999999999999999999"), ("--offset", "-1"), ("--limit", "101")],
)
def test_tasks_list_out_of_range_is_bad_input_naming_the_option(
    capsys: pytest.CaptureFixture[str], db: Path, option: str, value: str
) -> None:
    """`tasks list` with an offset or limit beyond its range exits 2 naming the option."""
    code, _, err = run_cli(capsys, "tasks", "list", "--db", str(db), f"{option}={value}")
    assert code == EXIT_BAD_INPUT
    assert f"  {option}: must be an integer in " in err


def test_tasks_list_on_a_missing_db_exits_2_and_creates_no_file(tmp_path: Path) -> None:
    """`tasks list` on a missing file is exit 2 and creates nothing."""
    result = cli("tasks", "list", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert not (tmp_path / "x.db").exists()


def _wait_running(db: Path, deadline: float) -> dict[str, Any] | None:
    """The newest task once another process sees it RUNNING with progress; ``None`` when
    it finished before any look caught it running."""
    while time.monotonic() < deadline:
        listed = cli("tasks", "list", "--db", str(db), "--json")
        if listed.returncode == 0:
            tasks = json.loads(listed.stdout)["tasks"]
            if tasks and tasks[0]["status"] == "RUNNING" and tasks[0]["itemsSucceeded"] > 0:
                return dict(tasks[0])
            if tasks and tasks[0]["status"] == "COMPLETED":
                return None
    pytest.fail("the task never showed as RUNNING to another process")


@pytest.mark.slow
def test_cancel_from_another_process_stops_a_running_task(big_db: Path, tmp_path: Path) -> None:
    """`run` in one process, `tasks get` and `tasks cancel` in others: the run ends CANCELLED.

    Decided by what the cancel saw, not by timing: when the task had already finished
    (a fast machine), the cancel returns it COMPLETED and unchanged, and the test runs
    another task; a cancel that found it RUNNING must end the run as CANCELLED.
    """
    spec = write(tmp_path / "t.json", COPY_TASK)
    for _ in range(5):
        proc = subprocess.Popen(
            [executable(), "run", "--db", str(big_db), "--batch-size", "1", "--quiet", str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            running = _wait_running(big_db, time.monotonic() + 60)
            if running is not None:
                shown = json.loads(cli("tasks", "get", running["id"], "--db", str(big_db)).stdout)
                assert shown["status"] in ("RUNNING", "COMPLETED")
                cancelled = cli("tasks", "cancel", running["id"], "--db", str(big_db))
                assert cancelled.returncode == 0
                seen = json.loads(cancelled.stdout)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if running is None or seen["status"] == "COMPLETED":
            assert proc.returncode == 0, (proc.returncode, err)  # it finished first: again
            continue
        assert seen["status"] == "RUNNING"
        assert seen["cancelRequested"] is True
        assert proc.returncode == 4, (proc.returncode, err)
        final = json.loads(out)
        assert final["status"] == "FAILED"
        assert final["failures"][0]["code"] == "CANCELLED"
        assert final["itemsSucceeded"] < 20_000
        return
    pytest.fail("every task finished before its cancel reached it")


# -- read-only: list and get never write, never wait ---------------------------------------


def _command(*argv: str, timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "taskengine", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, time.monotonic() - started


def _add_task(db: Path) -> str:
    storage = SQLiteStorage(db)
    store = SQLiteTaskStore(storage)
    engine = TaskEngine(storage, task_store=store)
    try:
        task_id = engine.create_task({"task": COPY_TASK}).id
    finally:
        store.close()
        storage.close()
    return task_id


def test_tasks_list_and_get_answer_at_once_while_another_process_writes(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading commands neither wait for nor fail on a writer holding the lock."""
    task_id = _add_task(db)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=0)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # returns once the lock is held
        try:
            listed, took_list = _command("tasks", "list", "--db", str(db))
            got, took_get = _command("tasks", "get", task_id, "--db", str(db))
        finally:
            conn.execute("ROLLBACK")
    assert listed.returncode == EXIT_OK, listed.stderr
    assert "1 of 1 task(s)" in listed.stdout
    assert got.returncode == EXIT_OK, got.stderr
    assert json.loads(got.stdout)["id"] == task_id
    # A blocked reader waits the 30 s busy timeout; a subprocess starts in well under 5 s.
    assert took_list < 5, took_list
    assert took_get < 5, took_get


def _fingerprint(db: Path) -> tuple[str, int]:
    return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns


def _wal_frames(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_reading_commands_change_nothing_in_the_file(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tasks list|get` leave the file as it was, even with an expired task to sweep."""
    storage = SQLiteStorage(db)
    store = SQLiteTaskStore(storage)
    engine = TaskEngine(storage, task_store=store)
    try:
        expired = engine.create_task({"task": COPY_TASK}).id
        engine.run_until_idle()
    finally:
        store.close()
        storage.close()
    past = "2000-01-01T00:00:00.000Z"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE taskengine_tasks SET expires_at = ?", (past,))
    before = _fingerprint(db)
    assert _wal_frames(db) == 0
    code, out, err = run_cli(capsys, "tasks", "list", "--db", str(db), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["tasks"] == []
    code, _, err = run_cli(capsys, "tasks", "get", expired, "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert _fingerprint(db) == before
    assert _wal_frames(db) == 0  # a reader may create the -wal file, but writes nothing
    kept = SQLiteTaskStore(db)
    try:
        assert kept.get(expired) is not None  # hidden from the reader, not deleted
    finally:
        kept.close()


def _as_nobody() -> None:  # pragma: no cover - runs in the child process
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


def _unprivileged_command(packages: Path) -> tuple[list[str], dict[str, str], Any]:
    """How to run ``python -m taskengine`` as a user who cannot write the file.

    As root (who may write any file), the child drops to ``nobody``, with a system
    interpreter of the same version (this one may live under ``/root``) and copies of
    this checkout's packages in ``packages`` (the checkout itself may sit in a folder
    only root can read, such as a ``mktemp -d``).
    """
    env = dict(os.environ)
    if os.geteuid() != 0:
        return [sys.executable], env, None
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.path.exists(python):
        pytest.skip(f"running as root, and there is no {python} for user 'nobody'")
    import attr
    import attrs
    import sortedcontainers  # type: ignore[import-untyped]

    import taskengine

    os.chmod(packages, 0o755)
    for module in (attr, attrs, sortedcontainers, taskengine):
        source = Path(module.__file__ or "").parent
        shutil.copytree(source, packages / source.name, ignore=shutil.ignore_patterns("*.pyc"))
    for path in [packages, *packages.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    env["PYTHONPATH"] = str(packages)
    return [python], env, _as_nobody


def test_tasks_list_works_on_a_file_its_user_cannot_write(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0444 file in a 0555 directory is listed by a user who cannot write either."""
    task_id = _add_task(db)
    packages = Path(tempfile.mkdtemp(prefix="taskengine-pkgs-"))
    folder = Path(tempfile.mkdtemp(prefix="taskengine-ro-"))
    try:
        command, env, demote = _unprivileged_command(packages)
        os.chmod(folder, 0o755)
        copy = folder / "ro.db"
        copy.write_bytes(db.read_bytes())  # the whole file: the last close checkpointed
        os.chmod(copy, 0o444)
        os.chmod(folder, 0o555)
        result = subprocess.run(
            [*command, "-m", "taskengine", "tasks", "list", "--db", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=folder,
            preexec_fn=demote,
        )
        assert result.returncode == EXIT_OK, result.stderr
        assert task_id in result.stdout
        assert sorted(path.name for path in folder.iterdir()) == ["ro.db"]
    finally:
        os.chmod(folder, 0o755)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        shutil.rmtree(packages)


def test_tasks_list_shows_a_sliced_task_once_held_by_its_slices(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sliced task that started holds no lease: its OWNER is the live holder of one of
    its slices (else its slices' waiting reason); the slices are not listed."""
    storage = SQLiteStorage(db)
    store = SQLiteTaskStore(storage)
    try:
        engine = TaskEngine(storage, task_store=store)  # never started
        created = engine.create_task({"task": COPY_TASK}, slices=2)
        started = created.started(datetime.now(timezone.utc), 2)
        parent = attrs.evolve(started, slices=2, split=("i0025",))
        store.save(parent)  # started, and its slices inserted, as its engine does
        Slices(store, engine.clock, timedelta(days=1), lambda task: None).ensure(parent)
    finally:
        store.close()
        storage.close()

    def owners() -> dict[str, str]:
        code, out, err = run_cli(capsys, "tasks", "list", "--db", str(db))
        assert code == EXIT_OK, err
        lines = out.splitlines()
        column = lines[0].index("OWNER")
        return {line.split()[0]: line[column:].split("  ")[0].strip() for line in lines[2:-1]}

    assert owners() == {created.id: "waiting"}
    with task_store(db) as claims:
        now = datetime.now(timezone.utc)
        assert claims.claim(f"{created.id}~1", owner_id(os.getpid()), now, timedelta(hours=1))
    assert owners() == {created.id: f"{socket.gethostname()}/{os.getpid()}"}
