"""The `taskengine` command: demo, import, run (exit codes, Ctrl-C), tasks, serve."""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.cli import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    ProgressPrinter,
    build_parser,
    exit_code_for,
    format_duration,
    format_table,
    load_task_spec,
    main,
)
from taskengine.errors import InvalidRequest
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import Failure, Task, TaskStatus

SEED_DELETE_TASK = """{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
  "dataCollectionId": "Items", "environment": "LIVE",
  "filter": { "holidays": { "$in": ["Halloween"] } }, } } }
"""
COPY_TASK = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Items",
        "sourceFieldKey": "name",
        "targetFieldKey": "nameCopy",
    },
}


def run_cli(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run main(argv) in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write items as JSON Lines."""
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def item_count(db: Path, collection: str = "Items", environment: str = "LIVE") -> int:
    """How many items a collection holds."""
    with SQLiteStorage(db) as storage:
        return storage.count(collection, environment).value


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A database whose 'Items' collection (publish plugin) holds 50 items."""
    path = tmp_path / "items.db"
    items = [{"_id": f"i{n:03d}", "name": f"n{n}", "tags": "text"} for n in range(50)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    code, out, err = run_cli(
        capsys, "import", "--db", str(path), "--collection", "Items", "--publish-plugin",
        str(source),
    )
    assert code == EXIT_OK, err
    assert "Imported 50 items" in out
    return path


def _executable() -> str:
    found = shutil.which("taskengine", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("the taskengine console script is not installed next to the interpreter")
    return found


# -- demo ------------------------------------------------------------------------------------


def test_demo_runs_every_task_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` builds the sample data, runs the four task types and prints a summary."""
    path = tmp_path / "demo.db"
    code, out, _ = run_cli(capsys, "demo", "--items", "2000", "--db", str(path))
    assert code == EXIT_OK, out
    for name in ("COPY_FIELD_DATA", "EDIT_FIELD_DATA", "UPDATE_PUBLISH_STATUS", "DELETE_BY_QUERY"):
        assert any(line.startswith(name) and "COMPLETED" in line for line in out.splitlines())
    header = next(line for line in out.splitlines() if line.startswith("TASK"))
    assert header.split() == [
        "TASK", "WHAT", "WHERE", "MATCHED", "CHANGED", "FAILED", "TIME", "STATUS"
    ]
    starts = [header.index(name) for name in header.split()] + [None]

    def cells(line: str) -> dict[str, str]:
        spans = itertools.pairwise(starts)
        return {
            name: line[a:b].strip() for name, (a, b) in zip(header.split(), spans, strict=True)
        }

    rows = {r["TASK"]: r for r in map(cells, out.splitlines()) if r["STATUS"] == "COMPLETED"}
    copy_row = rows["COPY_FIELD_DATA"]
    assert (copy_row["WHERE"], copy_row["MATCHED"], copy_row["CHANGED"]) == (
        "products/LIVE", "2,000", "2,000"  # every LIVE item matched and changed
    )
    delete_row = rows["DELETE_BY_QUERY"]
    assert delete_row["WHERE"] == "products/SANDBOX"
    left = re.search(r"([\d,]+) SANDBOX items left", out)
    assert left is not None
    deleted = 200 - int(left.group(1).replace(",", ""))  # the sandbox starts with a tenth
    assert (delete_row["MATCHED"], delete_row["CHANGED"]) == (f"{deleted:,}", f"{deleted:,}")
    assert "in 0.0 s" not in out
    assert " 1 items" not in out
    with SQLiteStorage(path) as storage:
        item = storage.get_item("products", "LIVE", "item-000001")
        assert item is not None
        assert item["titleBackup"] == item["title"] == "Product 1"
        info = storage.collection_info("products")
        assert info.sandbox_enabled
        assert info.publish_plugin
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(path), "--json")
    assert json.loads(out)["metadata"]["total"] == 4


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0001, "<1 ms"), (0.0304, "30 ms"), (0.9994, "999 ms"), (2.44, "2.4 s"),
     (185, "3 min 05 s")],
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    """The demo summary never says "0.0 s" for sub-second work."""
    assert format_duration(seconds) == text


def test_demo_is_repeatable_on_the_same_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the demo again on one file needs --replace, which rebuilds the collection."""
    path = str(tmp_path / "demo.db")
    assert run_cli(capsys, "demo", "--items", "10", "--db", path)[0] == EXIT_OK
    code, out, err = run_cli(capsys, "demo", "--items", "20", "--db", path)
    assert code == EXIT_BAD_INPUT
    assert "--replace" in err
    code, out, _ = run_cli(capsys, "demo", "--items", "10", "--db", path, "--replace")
    assert code == EXIT_OK
    assert "products: 10 LIVE items" in out


def test_demo_leaves_an_existing_products_collection_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --replace, the demo refuses a file whose `products` is the user's own data."""
    path = tmp_path / "shop.db"
    items = tmp_path / "items.jsonl"
    items.write_text('{"_id": "mine", "precious": true}\n')
    code, _, _ = run_cli(
        capsys, "import", "--db", str(path), "--collection", "products", str(items)
    )
    assert code == EXIT_OK
    code, out, err = run_cli(capsys, "demo", "--items", "10", "--db", str(path))
    assert code == EXIT_BAD_INPUT
    assert "already has a collection 'products' (1 LIVE items)" in err
    assert "Created collection" not in out
    with SQLiteStorage(path) as storage:
        assert storage.get_item("products", "LIVE", "mine") == {"_id": "mine", "precious": True}
        assert not storage.collection_info("products").sandbox_enabled
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(path), "--json")
    assert json.loads(out)["metadata"]["total"] == 0


def test_installed_command_runs_the_demo(tmp_path: Path) -> None:
    """The installed `taskengine demo --items 2000` works from an empty folder."""
    result = subprocess.run(
        [_executable(), "demo", "--items", "2000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("COMPLETED") >= 8  # one progress line and one row per task
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone


def test_python_dash_m_works() -> None:
    """`python -m taskengine --version` prints the version."""
    result = subprocess.run(
        [sys.executable, "-m", "taskengine", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("taskengine ")


# -- import ----------------------------------------------------------------------------------


def test_import_reports_every_bad_line_and_imports_nothing(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad lines are reported by number, and not even the good lines are imported."""
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"_id": "a1"}\n'
        "\n"
        '{"_id": "a2",}\n'
        '{"_id": 3}\n'
        "not json\n"
        '{"_id": "a1"}\n'
        "[1]\n",
        encoding="utf-8",
    )
    code, _, err = run_cli(
        capsys, "import", "--db", str(db), "--collection", "Items", str(source)
    )
    assert code == EXIT_BAD_INPUT
    assert "4 bad line(s); nothing imported" in err
    assert "line 4: $._id: must be a string" in err
    assert "line 5: not valid JSON" in err
    assert 'line 6: $._id: "a1" appears twice in the file (first on line 1)' in err
    assert "line 7: must be a JSON object" in err
    assert "line 3" not in err  # a trailing comma is fine
    assert item_count(db) == 50


def test_import_of_a_stored_id_rolls_back(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An _id already in the collection is fatal: nothing from the file is imported."""
    items = [{"_id": f"new{n:04d}"} for n in range(1500)] + [{"_id": "i007"}]
    source = write_jsonl(tmp_path / "dup.jsonl", items)
    code, _, err = run_cli(capsys, "import", "--db", str(db), "--collection", "Items", str(source))
    assert code == EXIT_BAD_INPUT
    assert "line 1501: $._id: \"i007\" is already in collection 'Items' (LIVE)" in err
    assert item_count(db) == 50


def test_import_creates_collections_and_sandboxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Importing into SANDBOX with --sandbox creates the collection with a sandbox enabled."""
    item = {"_id": "x", "when": {"$date": "2025-01-01T00:00:00Z"}}
    source = write_jsonl(tmp_path / "s.jsonl", [item])
    path = tmp_path / "new.db"
    code, _, err = run_cli(
        capsys, "import", "--db", str(path), "--collection", "C", "--environment", "SANDBOX",
        "--sandbox", str(source),
    )
    assert code == EXIT_OK, err
    assert item_count(path, "C", "SANDBOX") == 1
    assert item_count(path, "C", "LIVE") == 0


def test_import_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input file is a clear error."""
    code, _, err = run_cli(
        capsys, "import", "--db", str(tmp_path / "x.db"), "--collection", "C",
        str(tmp_path / "nope.jsonl"),
    )
    assert code == EXIT_BAD_INPUT
    assert "nope.jsonl: no such file" in err


# -- run -------------------------------------------------------------------------------------


def test_run_completes_and_prints_the_task(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` on a good task exits 0 and prints the final task JSON."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    code, out, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    assert code == EXIT_OK, err
    task = json.loads(out)
    assert task["status"] == "COMPLETED"
    assert task["itemsSucceeded"] == 50
    assert "COPY_FIELD_DATA: 100% 50/50 items" in err


def test_run_accepts_the_seed_request_body(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference's curl body, trailing comma and all, runs as a task file."""
    spec = tmp_path / "delete.json"
    spec.write_text(SEED_DELETE_TASK, encoding="utf-8")
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert code == EXIT_OK, err
    assert json.loads(out)["type"] == "DELETE_BY_QUERY"


def test_run_with_item_failures_exits_1(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task that COMPLETED with item failures exits 1."""
    spec = tmp_path / "edit.json"
    edit = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "fieldKey": "tags",
            "operations": {"addItems": ["x"]},
        },
    }
    spec.write_text(json.dumps(edit), encoding="utf-8")
    code, out, _ = run_cli(capsys, "run", "--db", str(db), str(spec))
    task = json.loads(out)
    assert task["status"] == "COMPLETED"
    assert task["itemsFailed"] == 50
    assert code == EXIT_ITEM_FAILURES


def test_run_of_a_failing_task_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task that ends FAILED (no publish plugin) exits 3."""
    source = write_jsonl(tmp_path / "p.jsonl", [{"_id": "a"}])
    path = str(tmp_path / "plain.db")
    assert run_cli(capsys, "import", "--db", path, "--collection", "Plain", str(source))[0] == 0
    spec = tmp_path / "publish.json"
    publish = {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Plain",
            "operation": "SET_PUBLISHED_STATUS",
        },
    }
    spec.write_text(json.dumps(publish), encoding="utf-8")
    code, out, _ = run_cli(capsys, "run", "--db", path, str(spec))
    assert code == EXIT_FAILED
    assert json.loads(out)["failures"][0]["code"] == "WDE0119"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{\n  "type": "COPY_FIELD_DATA",\n  "x": tru\n}', "line 3 column 8"),
        ("[]", "must be a JSON object"),
        (
            '{"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {}}',
            "task.editFieldDataOptions.fieldKey",
        ),
    ],
)
def test_run_with_bad_input_exits_2(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Bad JSON (with line and column) and bad specs exit 2, creating nothing."""
    spec = tmp_path / "bad.json"
    spec.write_text(content, encoding="utf-8")
    code, out, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    assert code == EXIT_BAD_INPUT
    assert message in err
    assert out == ""
    assert json.loads(run_cli(capsys, "tasks", "list", "--db", str(db), "--json")[1])[
        "metadata"
    ]["total"] == 0


def test_run_lists_every_violation(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every violation of a bad task spec is listed, one per line."""
    spec = tmp_path / "bad.json"
    spec.write_text('{"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {}}', encoding="utf-8")
    _, _, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    listed = [line for line in err.splitlines() if line.startswith("  task.")]
    assert len(listed) >= 2


def test_run_unknown_collection_exits_2(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown collection is reported with the known ones, before any task exists."""
    spec = tmp_path / "other.json"
    other = json.loads(json.dumps(COPY_TASK))
    other["copyFieldDataOptions"]["dataCollectionId"] = "Nope"
    spec.write_text(json.dumps(other), encoding="utf-8")
    code, _, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    assert code == EXIT_BAD_INPUT
    assert "unknown collection 'Nope'" in err
    assert "(collections: Items)" in err


@pytest.mark.parametrize("what", ["db", "task"])
def test_run_missing_files_exit_2(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    """A missing database or task file is a clear error."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    database = tmp_path / "missing.db" if what == "db" else db
    task_file = tmp_path / "missing.json" if what == "task" else spec
    code, _, err = run_cli(capsys, "run", "--db", str(database), str(task_file))
    assert code == EXIT_BAD_INPUT
    assert "missing" in err
    assert not (tmp_path / "missing.db").exists()


def test_no_wait_then_tasks_get_and_cancel(
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


def test_run_says_when_earlier_queued_tasks_run_first(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` after a `--no-wait` task says the queued one runs first; both complete."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    code, out, _ = run_cli(capsys, "run", "--db", str(db), "--no-wait", str(spec))
    assert code == EXIT_OK
    queued = json.loads(out)["id"]
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert code == EXIT_OK, err
    assert "1 earlier unfinished task(s)" in err
    code, out, _ = run_cli(capsys, "tasks", "get", queued, "--db", str(db))
    assert json.loads(out)["status"] == "COMPLETED"
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert code == EXIT_OK
    assert "earlier unfinished" not in err


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


def test_tasks_get_unknown_id_exits_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown task id is a clear 'not found' error."""
    code, _, err = run_cli(capsys, "tasks", "get", "nope", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "not found" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Missing arguments are usage errors with exit code 2; --help exits 0."""
    assert run_cli(capsys, "run")[0] == EXIT_BAD_INPUT
    assert run_cli(capsys, "demo", "--items", "0")[0] == EXIT_BAD_INPUT
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == EXIT_OK
    assert "exit codes" in out


def _reader(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], text: str) -> str:
    while True:
        line = lines.get(timeout=60)
        if text in line:
            return line


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """A database with 20,000 items in 'Items'."""
    path = tmp_path / "big.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", ({"_id": f"i{n:06d}", "name": "x"} for n in range(20_000))
        )
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_cancels_the_task_cleanly(big_db: Path, tmp_path: Path) -> None:
    """Ctrl-C during `run` cancels the task, prints it, and exits 4."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    proc = subprocess.Popen(
        [_executable(), "run", "--db", str(big_db), "--batch-size", "2", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = _reader(proc.stderr)
        _wait_for(lines, "Created task")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_CANCELLED
    task = json.loads(out)
    assert task["status"] == "FAILED"
    assert task["failures"][0]["code"] == "CANCELLED"
    assert task["itemsSucceeded"] < 20_000


# -- serve -----------------------------------------------------------------------------------


def test_serve_refuses_public_host_without_token(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a token `serve` will not bind a non-loopback address."""
    monkeypatch.delenv("TASKENGINE_TOKEN", raising=False)
    code, _, err = run_cli(capsys, "serve", "--db", str(db), "--host", "0.0.0.0")
    assert code == EXIT_BAD_INPUT
    assert "without a token" in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_serve_answers_and_stops_on_ctrl_c(db: Path) -> None:
    """`serve` answers the API on its port and exits 0 on Ctrl-C."""
    proc = subprocess.Popen(
        [_executable(), "serve", "--db", str(db), "--port", "0", "--quiet", "--token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = _wait_for(_reader(proc.stdout), "Serving")
        address = line.split("http://", 1)[1].split("/", 1)[0]
        conn = http.client.HTTPConnection(address, timeout=30)
        try:
            conn.request("GET", "/cms/v1/tasks", headers={"Authorization": "Bearer t"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["metadata"]["total"] == 0
        finally:
            conn.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == EXIT_OK


def test_serve_without_waitress_says_what_to_install(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without waitress installed `serve` names the extra to install and exits 2."""
    monkeypatch.setitem(sys.modules, "waitress", None)  # makes `import waitress` fail
    code, out, err = run_cli(capsys, "serve", "--db", str(db), "--port", "0")
    assert code == EXIT_BAD_INPUT
    assert "pip install 'taskengine[server]'" in err
    assert out == ""


@pytest.mark.parametrize(
    ("port", "reason"),
    [("99999", "0-65535, got 99999"), ("-1", "0-65535, got -1"), ("http", "'http'")],
)
def test_serve_rejects_a_bad_port(
    db: Path, capsys: pytest.CaptureFixture[str], port: str, reason: str
) -> None:
    """A port outside 0-65535, or not a number, is one clear usage error (exit 2)."""
    code, _, err = run_cli(capsys, "serve", "--db", str(db), f"--port={port}")
    assert code == EXIT_BAD_INPUT
    assert len(err.splitlines()) == 1, err
    assert err.startswith("taskengine serve: error: argument --port")
    assert reason in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to a child needs POSIX")
def test_serve_reports_resumed_and_checkpointed_tasks(
    big_db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`serve` says how many unfinished tasks it resumed, and on SIGTERM how many it left
    checkpointed, a number that matches the database afterwards."""
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"task": COPY_TASK}))
    for _ in range(2):
        code, _, err = run_cli(capsys, "run", "--db", str(big_db), "--no-wait", str(task_file))
        assert code == EXIT_OK, err
    proc = subprocess.Popen(
        [_executable(), "serve", "--db", str(big_db), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = _reader(proc.stdout)
        resumed = _wait_for(lines, "unfinished task")
        _wait_for(lines, "Serving")
        proc.send_signal(signal.SIGTERM)
        stopped = _wait_for(lines, "Stopped.")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == EXIT_OK
    assert resumed.startswith(f"Resumed 2 unfinished task(s) from {big_db}.")
    left = int(stopped.split("Stopped. ", 1)[1].split(" ", 1)[0])
    assert "were checkpointed; they resume when" in stopped
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(big_db), "--json")
    assert code == EXIT_OK
    unfinished = [t for t in json.loads(out)["tasks"] if t["status"] in ("NEW", "RUNNING")]
    assert len(unfinished) == left


# -- pieces ----------------------------------------------------------------------------------


def _task(status: TaskStatus, failed: int, failure: Failure | None) -> Task:
    from taskengine.task import RawOptions

    task = Task(
        id="t",
        type="COPY_FIELD_DATA",
        options_key="copyFieldDataOptions",
        options=RawOptions("c", {"dataCollectionId": "c"}),
        created_at=_now(),
    )
    if status is TaskStatus.NEW:
        return task
    task = task.started(_now(), 10).with_batch(10 - failed, failed, [], None)
    if status is TaskStatus.RUNNING:
        return task
    return task.finished(status, _now(), _retention(), failure)


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime(2025, 1, 1, tzinfo=timezone.utc)


def _retention() -> Any:
    from datetime import timedelta

    return timedelta(days=1)


@given(
    st.sampled_from(list(TaskStatus)),
    st.integers(min_value=0, max_value=10),
    st.sampled_from(["CANCELLED", "WDE0054", "WDE0119"]),
)
def test_exit_code_is_a_function_of_the_outcome(
    status: TaskStatus, failed: int, code: str
) -> None:
    """Each outcome has its own exit code, and only that outcome gets it."""
    failure = Failure(code, "d") if status is TaskStatus.FAILED else None
    result = exit_code_for(_task(status, failed, failure))
    if status is TaskStatus.COMPLETED:
        assert result == (EXIT_ITEM_FAILURES if failed else EXIT_OK)
    elif status is TaskStatus.FAILED:
        assert result == (EXIT_CANCELLED if code == "CANCELLED" else EXIT_FAILED)
    else:
        assert result == EXIT_OK
    assert len(set(EXIT_CODES)) == 7  # and 130, Ctrl-C before the task exists


def test_progress_printer_draws_a_bar_on_a_terminal() -> None:
    """On a terminal the bar is redrawn in place; off it, plain lines are written."""
    running = _task(TaskStatus.RUNNING, 2, None)
    stream = io.StringIO()
    printer = ProgressPrinter(stream, "COPY", tty=True)
    printer.update(running)
    printer.finish(_task(TaskStatus.COMPLETED, 0, None))
    text = stream.getvalue()
    assert text.startswith("\r")
    assert "100.0%" in text
    assert text.endswith("\n")
    plain = io.StringIO()
    printer = ProgressPrinter(plain, "COPY", tty=False, interval=0)
    printer.update(running)
    assert plain.getvalue() == "COPY: 100% 10/10 items (2 failed), " + plain.getvalue().split(
        ", ", 1
    )[1]
    assert "\r" not in plain.getvalue()


def test_load_task_spec_accepts_both_forms() -> None:
    """A task file may hold the request body or the bare task; anything else is refused."""
    assert load_task_spec(json.dumps(COPY_TASK), "f") == {"task": COPY_TASK}
    assert load_task_spec(json.dumps({"task": COPY_TASK}), "f") == {"task": COPY_TASK}
    with pytest.raises(InvalidRequest, match="extra: unknown field"):
        load_task_spec(json.dumps({"task": COPY_TASK, "extra": 1}), "f")


def test_format_table_aligns_columns() -> None:
    """Columns are padded to their widest cell."""
    assert format_table(("A", "BB"), [("xxx", "y")]) == "A    BB\n---  --\nxxx  y"


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKENGINE_TOKEN", raising=False)


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, Any]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from _parsers(child, f"{name} {child_name}")


def test_every_command_has_a_description_in_its_help() -> None:
    """`--help` of every command and action (run, tasks, tasks list, ...) describes it."""
    missing = [
        name for name, parser in _parsers(build_parser(), "taskengine")
        if len((parser.description or "").split()) < 8
    ]
    assert missing == []
