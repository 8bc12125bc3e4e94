"""Database files from earlier releases open, upgrade and resume.

``fixtures/taskstore_v1.db`` was written by the release before the task row format
(``fixtures/make_taskstore_v1.py`` says how); ``fixtures/taskstore_v1_expected.json`` is
what its task store read back. ``fixtures/taskstore_v2.db`` is the same file as the release
before task leases wrote it (row format 2, ``fixtures/make_taskstore_v2.py``), and
``fixtures/taskstore_v3.db`` as the release before leader leases wrote it, with two task
leases taken (``fixtures/make_taskstore_v3.py``): the same tasks, so the same expectations
hold. Every test works on a copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from taskengine import _sqlite_taskschema, _taskrow
from taskengine.cli import main
from taskengine.engine import TaskEngine
from taskengine.errors import StorageError
from taskengine.storage._database import Database
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import Task, TaskStatus
from taskengine.taskstore import Lease, SQLiteTaskStore

CURRENT = 5
"""The task store's schema version written by this code."""
LEASE_COLUMNS = ["lease_owner", "lease_token", "lease_expires"]
SLICE_COLUMNS = ["parent", "slice_until", "slices", "split"]
LEADERS = "taskengine_leaders"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
"""When the version-3 fixture's task leases were taken."""

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "taskstore_v1_expected.json").read_text())
IDS: dict[str, str] = EXPECTED["ids"]
#: The fixture's tasks in creation order.
CREATED = [
    IDS[name] for name in ("completed", "scheduled", "cancelled", "dated", "running", "fresh")
]


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A fresh copy of the version-1 fixture database."""
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / "taskstore_v1.db", path)
    return path


@pytest.fixture
def v2_file(tmp_path: Path) -> Path:
    """A fresh copy of the version-2 fixture database (no lease columns)."""
    path = tmp_path / "v2.db"
    shutil.copyfile(FIXTURES / "taskstore_v2.db", path)
    return path


@pytest.fixture
def v3_file(tmp_path: Path) -> Path:
    """A fresh copy of the version-3 fixture database (task leases, no leaders table)."""
    path = tmp_path / "v3.db"
    shutil.copyfile(FIXTURES / "taskstore_v3.db", path)
    return path


def schema(path: Path) -> tuple[int, list[str]]:
    """The task store's schema version in ``path`` and its task table's columns."""
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT version FROM taskengine_schema WHERE component = 'taskstore'"
        ).fetchone()
        columns = [r[1] for r in conn.execute("PRAGMA table_info(taskengine_tasks)")]
    return int(row[0]), columns


def tables(path: Path) -> set[str]:
    """The names of the tables in ``path``."""
    with closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def fingerprint(path: Path) -> str:
    """A hash of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_task(name: str) -> Task:
    """The task as the version-1 store returned it."""
    entry = EXPECTED["tasks"][name]
    return Task.from_json(entry["json"], checkpoint=entry["checkpoint"])


def assert_reads_like_the_old_store(store: SQLiteTaskStore) -> None:
    """Every fixture task reads back equal, and the list keeps the creation order."""
    for name, task_id in IDS.items():
        task = store.get(task_id)
        assert task == expected_task(name), name
        assert task is not None
        assert task.to_json() == EXPECTED["tasks"][name]["json"]
    listed, total = store.page(100, 0)
    assert total == len(IDS)
    assert [t.id for t in reversed(listed)] == CREATED


def test_the_fixture_is_at_version_one() -> None:
    """The committed fixture holds the version-1 rows (a body of task JSON)."""
    version, columns = schema(FIXTURES / "taskstore_v1.db")
    assert version == 1
    assert "body" in columns


def test_opening_an_old_file_upgrades_its_rows_in_place(old_file: Path) -> None:
    """A writable open moves the rows to the current version, every task reads back
    unchanged, and no task is leased."""
    store = SQLiteTaskStore(old_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()
    version, columns = schema(old_file)
    assert version == CURRENT
    assert "body" not in columns
    assert columns[-7:] == LEASE_COLUMNS + SLICE_COLUMNS
    assert "checkpoint" in columns
    with closing(sqlite3.connect(old_file)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        mark = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'taskengine_tasks'"
        ).fetchone()
    assert "taskengine_tasks_v1" not in tables
    assert {"taskengine_tasks_status", "taskengine_tasks_expiry", LEADERS} <= tables
    assert mark == (len(IDS),)
    again = SQLiteTaskStore(old_file)
    try:
        assert_reads_like_the_old_store(again)
        assert again.leader_of("publish-scheduler") is None
    finally:
        again.close()


def test_an_upgraded_file_resumes_its_running_task_and_runs_the_new_ones(
    old_file: Path,
) -> None:
    """The RUNNING task resumes at its checkpoint (each item edited once); NEW ones run."""
    storage = SQLiteStorage(old_file)
    engine = TaskEngine(storage, task_store=SQLiteTaskStore(storage), batch_size=50)
    try:
        assert engine.run_until_idle() == 3
        running = engine.get_task(IDS["running"])
        assert running.status is TaskStatus.COMPLETED
        assert (running.items_succeeded, running.items_failed) == (300, 0)
        assert running.estimated_item_count == 300
        things = list(storage.find("things", "LIVE"))
        assert len(things) == 300
        assert all(item["tags"] == ["seen"] for item in things)
        fresh = engine.get_task(IDS["fresh"])
        assert fresh.status is TaskStatus.COMPLETED
        assert (fresh.items_succeeded, fresh.items_failed) == (300, 0)
        dated = engine.get_task(IDS["dated"])
        assert dated.status is TaskStatus.COMPLETED, dated.failures
        for name in ("completed", "scheduled", "cancelled"):
            assert engine.get_task(IDS[name]).to_json() == EXPECTED["tasks"][name]["json"]
    finally:
        storage.close()


def test_a_failed_upgrade_leaves_the_old_format(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while converting a row rolls the whole upgrade back; a later open succeeds."""
    encode = _taskrow.encode
    calls = []

    def failing(task: Task, *args: Any) -> _taskrow.Row:
        calls.append(task.id)
        if len(calls) == 4:
            raise RuntimeError("crash mid-upgrade")
        return encode(task, *args)

    monkeypatch.setattr(_taskrow, "encode", failing)
    with pytest.raises(RuntimeError, match="mid-upgrade"):
        SQLiteTaskStore(old_file)
    assert len(calls) == 4
    version, columns = schema(old_file)
    assert (version, "body" in columns) == (1, True)
    monkeypatch.setattr(_taskrow, "encode", encode)
    store = SQLiteTaskStore(old_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()


KILLED_UPGRADE = textwrap.dedent(
    """
    import os, signal
    from taskengine import _taskrow
    from taskengine.taskstore import SQLiteTaskStore
    encode, calls = _taskrow.encode, []
    def dying(task, *args):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(task, *args)
    _taskrow.encode = dying
    SQLiteTaskStore({path!r})
    """
)


def test_a_process_killed_during_the_upgrade_leaves_the_old_format(old_file: Path) -> None:
    """SIGKILL in the middle of converting rows leaves version 1, readable and upgradable."""
    child = subprocess.run(
        [sys.executable, "-c", KILLED_UPGRADE.format(path=str(old_file))],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    version, columns = schema(old_file)
    assert (version, "body" in columns) == (1, True)
    store = SQLiteTaskStore(old_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()
    assert schema(old_file)[0] == CURRENT


@pytest.mark.parametrize("read_only", [False, True])
def test_a_newer_task_store_version_is_refused_untouched(old_file: Path, read_only: bool) -> None:
    """A file whose task rows are newer than this code raises StorageError, unchanged."""
    with closing(sqlite3.connect(old_file)) as conn, conn:
        conn.execute(
            "UPDATE taskengine_schema SET version = ? WHERE component = 'taskstore'", (CURRENT + 1,)
        )
    before = fingerprint(old_file)
    database = Database(old_file, read_only=read_only)
    try:
        with pytest.raises(StorageError, match=f"taskstore schema version {CURRENT + 1}"):
            SQLiteTaskStore(database)
    finally:
        database.close()
    assert fingerprint(old_file) == before


def test_a_read_only_view_reads_an_old_file_without_upgrading(old_file: Path) -> None:
    """Opened read-only, a version-1 file lists every task and stays version 1, byte for byte."""
    before = fingerprint(old_file)
    database = Database(old_file, read_only=True)
    try:
        store = SQLiteTaskStore(database)
        assert_reads_like_the_old_store(store)
        assert [t.id for t in store.unfinished()] == [IDS["dated"], IDS["running"], IDS["fresh"]]
        assert len(store.expired(datetime(9999, 1, 1, tzinfo=timezone.utc), 10)) == 3
        now = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
        assert store.lease_of(IDS["running"]) is None
        assert store.claimable(now, 10) == [IDS["dated"], IDS["running"], IDS["fresh"]]
        assert store.lead("publish-scheduler", "engine-a", now, timedelta(seconds=30)) is None
        assert store.leader_of("publish-scheduler") is None
    finally:
        database.close()
    assert fingerprint(old_file) == before
    assert schema(old_file)[0] == 1


def test_tasks_list_reads_an_old_file_without_changing_it(
    old_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`taskengine tasks list` on a version-1 file lists its tasks and leaves it as it was."""
    before = fingerprint(old_file)
    code = main(["tasks", "list", "--db", str(old_file), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    listed = json.loads(out)["tasks"]
    assert [task["id"] for task in reversed(listed)] == CREATED
    assert fingerprint(old_file) == before


def test_the_v2_fixture_is_at_version_two() -> None:
    """The committed version-2 fixture has the row columns and no lease columns."""
    version, columns = schema(FIXTURES / "taskstore_v2.db")
    assert version == 2
    assert "checkpoint" in columns
    assert not set(LEASE_COLUMNS) & set(columns)


def test_opening_a_v2_file_adds_the_lease_columns_in_place(v2_file: Path) -> None:
    """A writable open adds the lease columns; tasks, order and sequence are kept, none leased."""
    store = SQLiteTaskStore(v2_file)
    try:
        assert_reads_like_the_old_store(store)
        assert all(store.lease_of(task_id) is None for task_id in IDS.values())
        now = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
        assert store.claimable(now, 10) == [IDS["dated"], IDS["running"], IDS["fresh"]]
        lease = store.claim(IDS["running"], "engine-a", now, timedelta(seconds=30))
        assert lease is not None
        assert lease.token == 1
        led = store.lead("publish-scheduler", "engine-a", now, timedelta(seconds=30))
        assert led is not None
        assert led.token == 1
    finally:
        store.close()
    version, columns = schema(v2_file)
    assert (version, columns[-7:]) == (CURRENT, LEASE_COLUMNS + SLICE_COLUMNS)
    assert LEADERS in tables(v2_file)


def test_a_failed_v2_upgrade_leaves_version_two(
    v2_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while adding the lease columns rolls the whole upgrade back."""
    monkeypatch.setattr(
        _sqlite_taskschema,
        "_LEASE_COLUMNS",
        ("lease_owner TEXT", "lease_token INTEGER NOT NULL DEFAULT 0", "lease_expires ((("),
    )
    with pytest.raises(StorageError):
        SQLiteTaskStore(v2_file)
    version, columns = schema(v2_file)
    assert version == 2
    assert not set(LEASE_COLUMNS) & set(columns)
    monkeypatch.undo()
    store = SQLiteTaskStore(v2_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()
    assert schema(v2_file)[0] == CURRENT


def test_a_read_only_view_reads_a_v2_file_without_upgrading(v2_file: Path) -> None:
    """Opened read-only, a version-2 file lists every task, none leased, and stays as it was."""
    before = fingerprint(v2_file)
    database = Database(v2_file, read_only=True)
    try:
        store = SQLiteTaskStore(database)
        assert_reads_like_the_old_store(store)
        now = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
        assert store.lease_of(IDS["running"]) is None
        assert store.claimable(now, 2) == [IDS["dated"], IDS["running"]]
        with pytest.raises(StorageError, match="read-only"):
            store.claim(IDS["running"], "engine-a", now, timedelta(seconds=30))
        assert store.lead("publish-scheduler", "engine-a", now, timedelta(seconds=30)) is None
        assert store.leader_of("publish-scheduler") is None
    finally:
        database.close()
    assert fingerprint(v2_file) == before


@pytest.mark.parametrize("name", ["v2_file", "v3_file"])
def test_a_v2_or_v3_file_resumes_its_running_task(
    name: str, request: pytest.FixtureRequest
) -> None:
    """After the upgrade the RUNNING task resumes at its checkpoint, each item once."""
    storage = SQLiteStorage(request.getfixturevalue(name))
    engine = TaskEngine(storage, task_store=SQLiteTaskStore(storage), batch_size=50)
    try:
        assert engine.run_until_idle() == 3
        running = engine.get_task(IDS["running"])
        assert (running.status, running.items_succeeded) == (TaskStatus.COMPLETED, 300)
        assert all(item["tags"] == ["seen"] for item in storage.find("things", "LIVE"))
    finally:
        storage.close()


def test_a_read_only_view_of_a_current_file_shows_leases(old_file: Path) -> None:
    """`tasks list` style read-only views of a current file see the leases and the
    leaderships a writer took."""
    now = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    writer = SQLiteTaskStore(old_file)
    lease = writer.claim(IDS["fresh"], "engine-a", now, timedelta(seconds=30))
    led = writer.lead("publish-scheduler", "engine-a", now, timedelta(seconds=30))
    writer.close()
    database = Database(old_file, read_only=True)
    try:
        view = SQLiteTaskStore(database)
        assert view.lease_of(IDS["fresh"]) == lease
        assert view.claimable(now, 10) == [IDS["dated"], IDS["running"]]
        assert view.leader_of("publish-scheduler") == led
    finally:
        database.close()


def test_the_v3_fixture_is_at_version_three(v3_file: Path) -> None:
    """The committed version-3 fixture has the lease columns, two task leases and no
    leaders table."""
    version, columns = schema(FIXTURES / "taskstore_v3.db")
    assert (version, columns[-3:]) == (3, LEASE_COLUMNS)
    assert LEADERS not in tables(FIXTURES / "taskstore_v3.db")
    with closing(sqlite3.connect(v3_file)) as conn:
        leased = conn.execute(
            "SELECT id, lease_owner, lease_token FROM taskengine_tasks WHERE lease_token > 0"
        ).fetchall()
    assert sorted(leased) == sorted([(IDS["fresh"], "engine-a", 1), (IDS["dated"], None, 1)])


def test_opening_a_v3_file_adds_the_leaders_table_in_place(v3_file: Path) -> None:
    """A writable open adds the leaders table (no role led) and keeps tasks and task leases."""
    store = SQLiteTaskStore(v3_file)
    try:
        assert_reads_like_the_old_store(store)
        lease = store.lease_of(IDS["fresh"])
        assert lease == Lease(IDS["fresh"], "engine-a", 1, NOW + timedelta(seconds=30))
        assert store.lease_of(IDS["dated"]) is None
        assert store.claimable(NOW, 10) == [IDS["dated"], IDS["running"]]
        again = store.claim(IDS["dated"], "engine-b", NOW, timedelta(seconds=30))
        assert again is not None
        assert again.token == 2
        assert store.leader_of("publish-scheduler") is None
        led = store.lead("publish-scheduler", "engine-a", NOW, timedelta(seconds=30))
        assert led == Lease("publish-scheduler", "engine-a", 1, NOW + timedelta(seconds=30))
    finally:
        store.close()
    assert schema(v3_file) == (CURRENT, schema(FIXTURES / "taskstore_v3.db")[1] + SLICE_COLUMNS)
    with closing(sqlite3.connect(v3_file)) as conn:
        columns = [r[1:3] for r in conn.execute(f"PRAGMA table_info({LEADERS})")]
    assert columns == [
        ("role", "TEXT"),
        ("owner", "TEXT"),
        ("token", "INTEGER"),
        ("expires", "INTEGER"),
    ]


def test_a_failed_v3_upgrade_leaves_version_three(
    v3_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while adding the leaders table rolls the whole upgrade back."""
    monkeypatch.setattr(_sqlite_taskschema, "_LEADERS_SCHEMA", "CREATE TABLE (((")
    with pytest.raises(StorageError):
        SQLiteTaskStore(v3_file)
    assert schema(v3_file)[0] == 3
    assert LEADERS not in tables(v3_file)
    monkeypatch.undo()
    store = SQLiteTaskStore(v3_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()
    assert schema(v3_file)[0] == CURRENT


def test_a_read_only_view_reads_a_v3_file_without_upgrading(v3_file: Path) -> None:
    """Opened read-only, a version-3 file shows its task leases and no leader (lead: None),
    and stays as it was."""
    before = fingerprint(v3_file)
    database = Database(v3_file, read_only=True)
    try:
        store = SQLiteTaskStore(database)
        assert_reads_like_the_old_store(store)
        lease = store.lease_of(IDS["fresh"])
        assert lease == Lease(IDS["fresh"], "engine-a", 1, NOW + timedelta(seconds=30))
        assert store.lead("publish-scheduler", "engine-a", NOW, timedelta(seconds=30)) is None
        assert store.leader_of("publish-scheduler") is None
        store.resign(Lease("publish-scheduler", "engine-a", 1, NOW))
    finally:
        database.close()
    assert fingerprint(v3_file) == before
    assert schema(v3_file)[0] == 3


@pytest.fixture
def v4_file(v3_file: Path) -> Path:
    """A version-4 file: the version-3 fixture with the leaders table (what the release
    before slices wrote), made here from it as that release's upgrade did."""
    with closing(sqlite3.connect(v3_file)) as conn:
        conn.execute(_sqlite_taskschema._LEADERS_SCHEMA)
        conn.execute("UPDATE taskengine_schema SET version = 4 WHERE component = 'taskstore'")
        conn.commit()
    return v3_file


def test_opening_a_v4_file_adds_the_slice_columns_in_place(v4_file: Path) -> None:
    """A writable open adds the slice columns (no task sliced), keeps tasks, leases and
    order, and then keeps a sliced task and its slice hidden from the list."""
    store = SQLiteTaskStore(v4_file)
    try:
        assert_reads_like_the_old_store(store)
        assert all(task.slices == 1 for task in store.unfinished())
        assert store.claimable(NOW, 10) == [IDS["dated"], IDS["running"]]
        parent = attrs.evolve(
            expected_task("fresh"), id="sliced", status=TaskStatus.RUNNING, started_at=NOW
        )
        parent = attrs.evolve(parent, slices=2, split=("m\x00\u00e9",))
        child = attrs.evolve(
            expected_task("fresh"), id="sliced~1", parent="sliced", checkpoint="m", until="z"
        )
        store.insert(parent)
        store.insert(child)
        assert store.get("sliced") == parent
        assert store.get("sliced~1") == child
        listed, total = store.page(100, 0)
        assert total == len(IDS) + 1 == len(store)
        assert "sliced~1" not in [task.id for task in listed]
        assert "sliced" not in store.claimable(NOW, 10)
    finally:
        store.close()
    version, columns = schema(v4_file)
    assert (version, columns[-4:]) == (CURRENT, SLICE_COLUMNS)


def test_a_failed_v4_upgrade_leaves_version_four(
    v4_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while adding the slice columns rolls the whole upgrade back."""
    monkeypatch.setattr(_sqlite_taskschema, "_SLICE_COLUMNS", ("parent TEXT", "((("))
    with pytest.raises(StorageError):
        SQLiteTaskStore(v4_file)
    assert schema(v4_file) == (4, schema(FIXTURES / "taskstore_v3.db")[1])
    monkeypatch.undo()
    store = SQLiteTaskStore(v4_file)
    try:
        assert_reads_like_the_old_store(store)
    finally:
        store.close()
    assert schema(v4_file)[0] == CURRENT


def test_a_read_only_view_reads_a_v4_file_without_upgrading(v4_file: Path) -> None:
    """Opened read-only, a version-4 file reads as it is (no task sliced), unchanged."""
    before = fingerprint(v4_file)
    database = Database(v4_file, read_only=True)
    try:
        store = SQLiteTaskStore(database)
        assert_reads_like_the_old_store(store)
        assert not store.keeps_slices
        assert len(store) == len(IDS)
    finally:
        database.close()
    assert fingerprint(v4_file) == before
