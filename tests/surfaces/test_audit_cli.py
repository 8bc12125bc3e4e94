"""Audit of the `taskengine` command as a newcomer runs it (separate processes, one db file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from taskengine.storage.sqlite import SQLiteStorage

SEED_DELETE = (
    '{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": { "dataCollectionId": '
    '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, '
    "} } }"
)
COPY = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Items",
        "sourceFieldKey": "name",
        "targetFieldKey": "nameCopy",
    },
}


def executable() -> str:
    """The installed console script."""
    found = shutil.which("taskengine", path=str(Path(sys.executable).parent))
    assert found is not None, "the taskengine console script is not installed"
    return found


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed `taskengine` command in a new process."""
    env = {k: v for k, v in os.environ.items() if k != "TASKENGINE_TOKEN"}
    return subprocess.run(
        [executable(), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A db file with 'Items' (publish plugin): 30 items, 10 on Halloween, and 'Plain'."""
    path = tmp_path / "shop.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items", publish_plugin=True)
        storage.insert_items(
            "Items",
            "LIVE",
            [
                {
                    "_id": f"i{n:03d}",
                    "name": f"n{n}",
                    "tags": ["a"] if n % 2 else "text",
                    "holidays": ["Halloween"] if n < 10 else ["Easter"],
                }
                for n in range(30)
            ],
        )
        storage.create_collection("Plain")
        storage.insert_items("Plain", "LIVE", [{"_id": "p1", "name": "x"}])
    return path


def write(path: Path, data: Any) -> Path:
    """Write JSON (or raw text) to ``path``."""
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- discoverability -------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    """`taskengine --help` exits 0 and names every command."""
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("demo", "import", "run", "tasks", "serve"):
        assert command in result.stdout


def test_python_dash_m_help_and_tasks_help() -> None:
    """`python -m taskengine --help` and `taskengine tasks --help` work."""
    result = subprocess.run(
        [sys.executable, "-m", "taskengine", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "run" in result.stdout
    result = cli("tasks", "--help")
    assert result.returncode == 0
    for action in ("list", "get", "cancel"):
        assert action in result.stdout


def test_no_arguments_is_a_usage_error() -> None:
    """Running `taskengine` with nothing is a usage error (exit 2) with a hint."""
    result = cli()
    assert result.returncode == 2
    assert "usage" in (result.stderr + result.stdout).lower()


# -- run: outcomes and exit codes ----------------------------------------------------------


def test_run_seed_body_verbatim_completes(db: Path, tmp_path: Path) -> None:
    """The seed DELETE_BY_QUERY body (trailing comma) runs; exit 0; final JSON on stdout."""
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", SEED_DELETE)))
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "COMPLETED"
    assert task["itemsSucceeded"] == 10
    assert task["estimatedItemCount"] == 10
    with SQLiteStorage(db) as storage:
        assert storage.count("Items", "LIVE").value == 20


def test_run_with_item_failures_exits_1(db: Path, tmp_path: Path) -> None:
    """COMPLETED with item failures exits 1 and lists them."""
    spec = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "fieldKey": "tags",
            "operations": {"addItems": ["b"]},
        },
    }
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 1, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "COMPLETED"
    assert task["itemsFailed"] == 15
    assert task["itemsSucceeded"] == 15
    assert len(task["failures"]) == 15


def test_run_of_failed_task_exits_3(db: Path, tmp_path: Path) -> None:
    """A whole-task failure (no publish plugin: WDE0119) exits 3."""
    spec = {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Plain",
            "operation": "SET_DRAFT_STATUS",
        },
    }
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 3, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "FAILED"
    assert task["failures"][0]["code"] == "WDE0119"


def test_run_missing_task_file_exits_2(db: Path, tmp_path: Path) -> None:
    """A missing task file is exit 2 naming the file, no traceback."""
    result = cli("run", "--db", str(db), str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert "nope.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_missing_db_exits_2(tmp_path: Path) -> None:
    """A missing db file is exit 2, and no db file is created by trying."""
    spec = write(tmp_path / "t.json", COPY)
    result = cli("run", "--db", str(tmp_path / "none.db"), str(spec))
    assert result.returncode == 2
    assert "none.db" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_run_bad_json_reports_line_and_column(db: Path, tmp_path: Path) -> None:
    """Bad JSON is exit 2 with the line and column of the error."""
    text = '{\n  "type": "COPY_FIELD_DATA",\n  "copyFieldDataOptions": {\n    oops\n  }\n}\n'
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", text)))
    assert result.returncode == 2
    assert "line 4" in result.stderr, result.stderr
    assert "column 5" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_run_unknown_collection_exits_2(db: Path, tmp_path: Path) -> None:
    """An unknown collection is exit 2 naming it, and no task is left behind."""
    spec = {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Nowhere",
            "sourceFieldKey": "a",
            "targetFieldKey": "b",
        },
    }
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 2
    assert "Nowhere" in result.stderr
    listed = cli("tasks", "list", "--db", str(db), "--json")
    assert json.loads(listed.stdout)["metadata"]["total"] == 0


def test_run_bad_spec_lists_every_violation(db: Path, tmp_path: Path) -> None:
    """A bad task spec is exit 2 with every violation path on stderr; nothing stored."""
    spec = {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "environment": "MARS",
            "sourceFieldKey": "a",
            "targetFieldKey": "_id",
            "extra": 1,
        },
    }
    result = cli("run", "--db", str(db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 2
    for path in (
        "task.copyFieldDataOptions.environment",
        "task.copyFieldDataOptions.targetFieldKey",
        "task.copyFieldDataOptions.extra",
    ):
        assert path in result.stderr, result.stderr
    listed = cli("tasks", "list", "--db", str(db), "--json")
    assert json.loads(listed.stdout)["metadata"]["total"] == 0


def test_run_missing_type_is_reported(db: Path, tmp_path: Path) -> None:
    """A task file without type names task.type."""
    result = cli(
        "run",
        "--db",
        str(db),
        str(write(tmp_path / "t.json", {"copyFieldDataOptions": COPY["copyFieldDataOptions"]})),
    )
    assert result.returncode == 2
    assert "task.type" in result.stderr


# -- tasks across processes --------------------------------------------------------------


def test_tasks_list_get_cancel_across_processes(db: Path, tmp_path: Path) -> None:
    """Tasks queued by one process are listed, shown and cancelled by others."""
    spec = write(tmp_path / "t.json", COPY)
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


@pytest.mark.parametrize("action", ["get", "cancel"])
def test_tasks_unknown_id_exits_2(db: Path, action: str) -> None:
    """`tasks get/cancel` of an unknown id is exit 2 'not found', nothing made up."""
    result = cli("tasks", action, "no-such-task", "--db", str(db))
    assert result.returncode == 2
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_tasks_list_bad_limit_exits_2(db: Path) -> None:
    """`tasks list --limit 0` is a clean exit 2 naming the limit."""
    result = cli("tasks", "list", "--db", str(db), "--limit", "0")
    assert result.returncode == 2
    assert "limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_tasks_list_on_missing_db_exits_2(tmp_path: Path) -> None:
    """`tasks list` on a missing file is exit 2 and creates nothing."""
    result = cli("tasks", "list", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """A db file with 20,000 items in 'Items'."""
    path = tmp_path / "big.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", ({"_id": f"i{n:06d}", "name": "x"} for n in range(20_000))
        )
    return path


def _wait_running(db: Path, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        listed = cli("tasks", "list", "--db", str(db), "--json")
        if listed.returncode == 0:
            tasks = json.loads(listed.stdout)["tasks"]
            if tasks and tasks[0]["status"] == "RUNNING" and tasks[0]["itemsSucceeded"] > 0:
                return dict(tasks[0])
    pytest.fail("the task never showed as RUNNING to another process")


@pytest.mark.slow
def test_cancel_from_another_process_stops_a_running_task(big_db: Path, tmp_path: Path) -> None:
    """`run` in one process, `tasks get` and `tasks cancel` in others: the run ends CANCELLED."""
    spec = write(tmp_path / "t.json", COPY)
    proc = subprocess.Popen(
        [executable(), "run", "--db", str(big_db), "--batch-size", "5", "--quiet", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = _wait_running(big_db, time.monotonic() + 60)
        shown = json.loads(cli("tasks", "get", running["id"], "--db", str(big_db)).stdout)
        assert shown["status"] in ("RUNNING", "COMPLETED")
        cancelled = cli("tasks", "cancel", running["id"], "--db", str(big_db))
        assert cancelled.returncode == 0
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, (proc.returncode, err)
    final = json.loads(out)
    assert final["status"] == "FAILED"
    assert final["failures"][0]["code"] == "CANCELLED"
    assert final["itemsSucceeded"] < 20_000


def test_import_then_run_then_demo_as_a_newcomer(tmp_path: Path) -> None:
    """import a JSONL file, run a task on it, then `demo` on a small sample: all exit 0."""
    db = tmp_path / "new.db"
    lines = "".join(json.dumps({"_id": f"k{n}", "name": f"n{n}"}) + "\n" for n in range(25))
    source = write(tmp_path / "items.jsonl", lines)
    imported = cli("import", "--db", str(db), "--collection", "Items", str(source))
    assert imported.returncode == 0, imported.stderr
    ran = cli("run", "--db", str(db), str(write(tmp_path / "t.json", {"task": COPY})))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["itemsSucceeded"] == 25
    demo = cli("demo", "--items", "300", "--db", str(tmp_path / "demo.db"))
    assert demo.returncode == 0, demo.stderr
    for kind in ("DELETE_BY_QUERY", "COPY_FIELD_DATA", "EDIT_FIELD_DATA", "UPDATE_PUBLISH_STATUS"):
        assert kind in demo.stdout


def test_import_bad_json_line_reports_line_and_imports_nothing(tmp_path: Path) -> None:
    """A bad JSONL line is reported by number (exit 2) and nothing is imported."""
    db = tmp_path / "new.db"
    source = write(tmp_path / "items.jsonl", '{"_id": "a"}\n{"_id": "b",,}\n{"_id": "c"}\n')
    result = cli("import", "--db", str(db), "--collection", "Items", str(source))
    assert result.returncode == 2
    assert "line 2" in result.stderr
    with SQLiteStorage(db) as storage:
        assert storage.list_collections() == []


def test_failed_import_leaves_no_new_collection(tmp_path: Path) -> None:
    """A failed import into a new collection leaves no collection behind (nothing partial)."""
    db = tmp_path / "new.db"
    source = write(tmp_path / "items.jsonl", '{"_id": "a"}\n[1]\n')
    result = cli("import", "--db", str(db), "--collection", "Fresh", str(source))
    assert result.returncode == 2
    with SQLiteStorage(db) as storage:
        assert [info.name for info in storage.list_collections()] == []


@pytest.mark.parametrize("command", [("tasks", "list"), ("import", "--collection", "Items")])
def test_db_that_is_not_a_database_is_bad_input(tmp_path: Path, command: tuple[str, ...]) -> None:
    """--db naming a text file or a directory is exit 2 (bad input), not a storage error."""
    text = write(tmp_path / "notes.db", "just some notes\n")
    folder = tmp_path / "folder.db"
    folder.mkdir()
    source = write(tmp_path / "items.jsonl", '{"_id": "a"}\n')
    extra = [str(source)] if command[0] == "import" else []
    for db in (text, folder):
        result = cli(*command, "--db", str(db), *extra)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert str(db.name) in result.stderr
    assert text.read_text() == "just some notes\n"
