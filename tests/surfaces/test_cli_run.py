"""`taskengine run`: exit codes by outcome, bad input (exit 2, nothing stored), Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_runner import (
    COPY_TASK,
    EDIT_Z_TASK,
    all_items,
    assert_edited_and_copied_once,
    batch_done,
    cli,
    executable,
    line_reader,
    make_items_db,
    make_tagged_db,
    newest_task_id,
    owner_id,
    queue_task,
    run_cli,
    started,
    task_store,
    task_total,
    wait_for_line,
    wait_until,
    write,
    write_jsonl,
)

from taskengine.cli import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    load_task_spec,
)
from taskengine.errors import InvalidRequest
from taskengine.storage.sqlite import SQLiteStorage

REFERENCE_DELETE_BODY = """{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
  "dataCollectionId": "Items", "environment": "LIVE",
  "filter": { "holidays": { "$in": ["Halloween"] } }, } } }
"""

"""The reference's curl body for DELETE_BY_QUERY, verbatim (trailing comma and all)."""

REVERSE_COPY_TASK = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Items",
        "sourceFieldKey": "name",
        "targetFieldKey": "nameAgain",
    },
}

ITEMS = 10_000
"""Items in the files two processes work on at once: a task over them at one item per
batch takes a couple of seconds."""


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """'Items' (publish plugin): 50 items whose `tags` is text (see make_items_db)."""
    return make_items_db(tmp_path, capsys)


# -- outcomes and exit codes ------------------------------------------------------------------


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


def test_run_accepts_the_reference_request_body(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference's curl body, trailing comma and all, runs as a task file."""
    spec = tmp_path / "delete.json"
    spec.write_text(REFERENCE_DELETE_BODY, encoding="utf-8")
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert code == EXIT_OK, err
    assert json.loads(out)["type"] == "DELETE_BY_QUERY"


def test_run_of_the_reference_delete_body_deletes_the_matching_items(
    shop_db: Path, tmp_path: Path
) -> None:
    """The seed DELETE_BY_QUERY body (trailing comma) runs; exit 0; final JSON on stdout."""
    result = cli(
        "run", "--db", str(shop_db), str(write(tmp_path / "t.json", REFERENCE_DELETE_BODY))
    )
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "COMPLETED"
    assert task["itemsSucceeded"] == 10
    assert task["estimatedItemCount"] == 10
    with SQLiteStorage(shop_db) as storage:
        assert storage.count("Items", "LIVE").value == 20


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


def test_run_in_a_new_process_lists_each_item_failure_and_exits_1(
    shop_db: Path, tmp_path: Path
) -> None:
    """COMPLETED with item failures exits 1 and lists them."""
    spec = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "fieldKey": "tags",
            "operations": {"addItems": ["b"]},
        },
    }
    result = cli("run", "--db", str(shop_db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 1, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "COMPLETED"
    assert task["itemsFailed"] == 15
    assert task["itemsSucceeded"] == 15
    assert len(task["failures"]) == 15


def test_run_of_a_failing_task_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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


def test_run_in_a_new_process_of_a_task_that_fails_exits_3(shop_db: Path, tmp_path: Path) -> None:
    """A whole-task failure (no publish plugin: WDE0119) exits 3."""
    spec = {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Plain",
            "operation": "SET_DRAFT_STATUS",
        },
    }
    result = cli("run", "--db", str(shop_db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 3, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "FAILED"
    assert task["failures"][0]["code"] == "WDE0119"


def test_run_leaves_unfinished_tasks_alone_and_says_so(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` runs only its own task: a queued task and one a live engine holds stay as they
    were, and `run` says how many it left alone, whose they are, and what resumes them."""
    waiting = queue_task(db, COPY_TASK)
    owned = queue_task(db, COPY_TASK)
    alive = owner_id(os.getpid())
    with task_store(db) as store:
        assert store.claim(owned, alive, datetime.now(timezone.utc), timedelta(hours=1))
    spec = write(tmp_path / "copy.json", COPY_TASK)
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert code == EXIT_OK, err
    assert json.loads(out)["itemsSucceeded"] == 50
    label = f"{socket.gethostname()}/{os.getpid()}"
    assert (
        f"2 unfinished task(s) left alone: 1 owned by a live engine ({label}), 1 waiting for "
        "an owner; resume them with 'taskengine run --resume' or a 'taskengine worker'.\n"
    ) in err
    with task_store(db) as store:
        for task_id in (waiting, owned):
            task = store.get(task_id)
            assert task is not None
            assert task.status.value == "NEW"
        lease = store.lease_of(owned)
        assert lease is not None
        assert lease.owner == alive
        assert store.lease_of(waiting) is None
    code, _, err = run_cli(capsys, "run", "--db", str(db), "--quiet", str(spec))
    assert "left alone" in err  # still there: nothing but `run`'s own task ran


@pytest.mark.slow
def test_two_runs_on_one_file_each_run_only_their_own_task(tmp_path: Path) -> None:
    """`run edit.json`, and once its task has committed a batch, `run copy.json` on the same
    file: the second leaves the first's task to it (and says whose it is), both tasks end
    COMPLETED with exact counters, and every item was edited and copied exactly once."""
    db = make_tagged_db(tmp_path, ITEMS)
    edit = write(tmp_path / "edit.json", EDIT_Z_TASK)
    copy = write(tmp_path / "copy.json", COPY_TASK)
    with started("run", "--db", str(db), "--batch-size", "1", "--quiet", str(edit)) as first:
        with task_store(db) as store:
            edit_id = wait_until(lambda: newest_task_id(store), "the first run's task")
            wait_until(lambda: batch_done(store, edit_id), "the first run's first batch")
        second = cli("run", "--db", str(db), "--quiet", str(copy))
        code, out, err = first.finish()
    assert second.returncode == EXIT_OK, second.stderr
    assert code == EXIT_OK, err
    for printed, kind in ((out, "EDIT_FIELD_DATA"), (second.stdout, "COPY_FIELD_DATA")):
        task = json.loads(printed)
        assert task["type"] == kind
        assert task["status"] == "COMPLETED"
        assert task["itemsSucceeded"] == ITEMS
        assert task["itemsFailed"] == 0
    assert json.loads(out)["id"] == edit_id
    assert_edited_and_copied_once(db, ITEMS)
    owner = f"{socket.gethostname()}/{first.pid}"
    assert f"1 unfinished task(s) left alone: 1 owned by a live engine ({owner}).\n" in (
        second.stderr
    )


# -- run --resume -------------------------------------------------------------------------------


def test_run_resume_finishes_unfinished_tasks_and_creates_none(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --resume` runs the waiting tasks to their end, prints each as a JSON line,
    creates no task, and leaves a task a live engine holds alone (and says so)."""
    waiting = [queue_task(db, COPY_TASK), queue_task(db, REVERSE_COPY_TASK)]
    owned = queue_task(db, COPY_TASK)
    alive = owner_id(os.getpid())
    with task_store(db) as store:
        assert store.claim(owned, alive, datetime.now(timezone.utc), timedelta(hours=1))
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--resume")
    assert code == EXIT_OK, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [task["id"] for task in printed] == waiting
    assert all(task["status"] == "COMPLETED" for task in printed)
    assert all(task["itemsSucceeded"] == 50 for task in printed)
    label = f"{socket.gethostname()}/{os.getpid()}"
    assert f"1 unfinished task(s) owned by a live engine ({label}) are left alone." in err
    assert "Resuming 2 unfinished tasks" in err
    assert "COPY_FIELD_DATA: 100% 50/50 items" in err
    assert task_total(capsys, db) == 3
    with task_store(db) as store:
        untouched = store.get(owned)
        assert untouched is not None
        assert untouched.status.value == "NEW"


def test_run_resume_with_nothing_waiting_exits_0(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --resume` on a file with no waiting task says so and exits 0 at once."""
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--resume")
    assert code == EXIT_OK
    assert out == ""
    assert "Nothing to resume" in err


def test_run_resume_exits_with_the_highest_exit_code_of_its_tasks(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One task with item failures (1) and one without (0): `run --resume` exits 1."""
    edit = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "fieldKey": "tags",
            "operations": {"addItems": ["x"]},
        },
    }
    queue_task(db, COPY_TASK)
    queue_task(db, edit)  # `tags` is text: every item fails
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--resume", "--quiet")
    assert code == EXIT_ITEM_FAILURES, err
    assert [json.loads(line)["itemsFailed"] for line in out.splitlines()] == [0, 50]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--resume", "task.json"), "argument --resume: not allowed with a task file"),
        (("--resume", "--no-wait"), "argument --resume: not allowed with argument --no-wait"),
        ((), "the following arguments are required: TASK.json (or --resume)"),
    ],
)
def test_run_needs_a_task_file_or_resume_alone(
    db: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    """`run` takes a task file or `--resume` (without `--no-wait`): else one usage line."""
    code, out, err = run_cli(capsys, "run", "--db", str(db), *argv)
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err == f"taskengine run: error: {message} (see 'taskengine run --help')\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_stops_run_resume_leaving_the_task_resumable(tmp_path: Path) -> None:
    """Ctrl-C during `run --resume` stops after the current batch (exit 130): the task stays
    RUNNING with no lease, and the next `run --resume` ends it with exact counters."""
    db = make_tagged_db(tmp_path, ITEMS)
    task_id = queue_task(db, EDIT_Z_TASK)
    with (
        started("run", "--db", str(db), "--resume", "--batch-size", "1") as resume,
        task_store(db) as store,
    ):
        wait_until(lambda: batch_done(store, task_id), "the resumed task's first batch")
        resume.proc.send_signal(signal.SIGINT)
        code, out, err = resume.finish()
        assert code == EXIT_INTERRUPTED, err
        assert out == ""
        assert "Stopped: 1 task left unfinished, checkpointed and released" in err
        assert store.lease_of(task_id) is None
        stopped = store.get(task_id)
        assert stopped is not None
        assert stopped.status.value == "RUNNING"
        assert 0 < stopped.items_succeeded < ITEMS
    again = cli("run", "--db", str(db), "--resume", "--quiet")
    assert again.returncode == EXIT_OK, again.stderr
    assert f"Task {task_id} (EDIT_FIELD_DATA): resuming at " in again.stderr
    final = json.loads(again.stdout)
    assert final["itemsSucceeded"] == ITEMS
    assert all(item["tags"] == ["z"] for item in all_items(db))


# -- bad input ----------------------------------------------------------------------------------


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
    assert (
        json.loads(run_cli(capsys, "tasks", "list", "--db", str(db), "--json")[1])["metadata"][
            "total"
        ]
        == 0
    )


def test_run_bad_json_reports_line_and_column(shop_db: Path, tmp_path: Path) -> None:
    """Bad JSON is exit 2 with the line and column of the error."""
    text = '{\n  "type": "COPY_FIELD_DATA",\n  "copyFieldDataOptions": {\n    oops\n  }\n}\n'
    result = cli("run", "--db", str(shop_db), str(write(tmp_path / "t.json", text)))
    assert result.returncode == 2
    assert "line 4" in result.stderr, result.stderr
    assert "column 5" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_run_lists_every_violation(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every violation of a bad task spec is listed, one per line."""
    spec = tmp_path / "bad.json"
    spec.write_text('{"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {}}', encoding="utf-8")
    _, _, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    listed = [line for line in err.splitlines() if line.startswith("  task.")]
    assert len(listed) >= 2


def test_run_of_a_bad_spec_lists_every_violation_and_stores_nothing(
    shop_db: Path, tmp_path: Path
) -> None:
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
    result = cli("run", "--db", str(shop_db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 2
    for path in (
        "task.copyFieldDataOptions.environment",
        "task.copyFieldDataOptions.targetFieldKey",
        "task.copyFieldDataOptions.extra",
    ):
        assert path in result.stderr, result.stderr
    listed = cli("tasks", "list", "--db", str(shop_db), "--json")
    assert json.loads(listed.stdout)["metadata"]["total"] == 0


def test_run_without_a_type_names_task_type(shop_db: Path, tmp_path: Path) -> None:
    """A task file without type names task.type."""
    result = cli(
        "run",
        "--db",
        str(shop_db),
        str(
            write(tmp_path / "t.json", {"copyFieldDataOptions": COPY_TASK["copyFieldDataOptions"]})
        ),
    )
    assert result.returncode == 2
    assert "task.type" in result.stderr


def test_run_of_an_unknown_collection_lists_the_known_ones_and_exits_2(
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


def test_run_of_an_unknown_collection_leaves_no_task_behind(shop_db: Path, tmp_path: Path) -> None:
    """An unknown collection is exit 2 naming it, and no task is left behind."""
    spec = {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Nowhere",
            "sourceFieldKey": "a",
            "targetFieldKey": "b",
        },
    }
    result = cli("run", "--db", str(shop_db), str(write(tmp_path / "t.json", spec)))
    assert result.returncode == 2
    assert "Nowhere" in result.stderr
    listed = cli("tasks", "list", "--db", str(shop_db), "--json")
    assert json.loads(listed.stdout)["metadata"]["total"] == 0


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


def test_run_of_a_missing_task_file_names_it_without_a_traceback(
    shop_db: Path, tmp_path: Path
) -> None:
    """A missing task file is exit 2 naming the file, no traceback."""
    result = cli("run", "--db", str(shop_db), str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert "nope.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_on_a_missing_db_exits_2_and_creates_no_file(tmp_path: Path) -> None:
    """A missing db file is exit 2, and no db file is created by trying."""
    spec = write(tmp_path / "t.json", COPY_TASK)
    result = cli("run", "--db", str(tmp_path / "none.db"), str(spec))
    assert result.returncode == 2
    assert "none.db" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


EDIT = (
    '{"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {"dataCollectionId": "Items", '
    '"fieldKey": "tags", "operations": {"addItems": [%s]}}}'
)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ('{"$date": "x"}', "task.editFieldDataOptions.operations.addItems.0"),
        ('"x\\ud800"', "task.editFieldDataOptions.operations.addItems.0"),
        ('{"k\\udc00": 1}', "task.editFieldDataOptions.operations.addItems.0.k\\udc00"),
    ],
    ids=["bad-date", "surrogate-value", "surrogate-key"],
)
@pytest.mark.parametrize("wait", [True, False], ids=["run", "no-wait"])
def test_run_refuses_unstorable_values_with_exit_2(
    capsys: pytest.CaptureFixture[str],
    db: Path,
    tmp_path: Path,
    value: str,
    field: str,
    wait: bool,
) -> None:
    """`run` with an addItems value storage refuses exits 2 naming the path; no task stored."""
    spec = write(tmp_path / "task.json", EDIT % value)
    extra = () if wait else ("--no-wait",)
    code, out, err = run_cli(capsys, "run", "--db", str(db), *extra, str(spec))
    assert code == EXIT_BAD_INPUT
    assert f"  {field}: " in err
    assert "Traceback" not in err
    assert out == ""
    assert task_total(capsys, db) == 0


def test_run_refuses_a_surrogate_in_a_filter_key(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    """A lone surrogate in a filter key is bad input (exit 2), not a UnicodeEncodeError."""
    spec = write(
        tmp_path / "task.json",
        '{"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items", '
        '"filter": {"\\ud800": 1}}}',
    )
    code, _, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    assert code == EXIT_BAD_INPUT
    assert "task.deleteByQueryOptions.filter.\\ud800: key is not valid Unicode" in err
    assert task_total(capsys, db) == 0


def test_load_task_spec_accepts_both_forms() -> None:
    """A task file may hold the request body or the bare task; anything else is refused."""
    assert load_task_spec(json.dumps(COPY_TASK), "f") == {"task": COPY_TASK}
    assert load_task_spec(json.dumps({"task": COPY_TASK}), "f") == {"task": COPY_TASK}
    with pytest.raises(InvalidRequest, match="extra: unknown field"):
        load_task_spec(json.dumps({"task": COPY_TASK, "extra": 1}), "f")


# -- Ctrl-C in a real process ----------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_cancels_the_task_cleanly(big_db: Path, tmp_path: Path) -> None:
    """Ctrl-C during `run` cancels the task, prints it, and exits 4."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    proc = subprocess.Popen(
        [executable(), "run", "--db", str(big_db), "--batch-size", "2", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = line_reader(proc.stderr)
        wait_for_line(lines, "Created task")
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


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_after_the_outcome_keeps_its_exit_code(db: Path, tmp_path: Path) -> None:
    """Ctrl-C once `run` has printed the finished task (engine shutting down) keeps exit 0."""
    spec = write(
        tmp_path / "task.json",
        '{"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items"}}',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskengine", "run", "--db", str(db), str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = line_reader(proc.stdout)
        printed = [lines.get(timeout=60)]
        while printed[-1] not in ("}\n", ""):  # the task JSON's last line, or the end
            printed.append(lines.get(timeout=60))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_OK, err
    assert "Traceback" not in err
    assert json.loads("".join(printed))["status"] == "COMPLETED"


def test_run_with_slices_runs_its_own_slices_and_prints_one_task(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --slices 3`: the non-adopting engine runs its own task's slices; the printed
    task is the combined one, and the list shows it alone."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    code, out, err = run_cli(capsys, "run", "--db", str(db), "--slices", "3", str(spec))
    assert code == EXIT_OK, err
    task = json.loads(out)
    assert (task["status"], task["itemsSucceeded"], task["slices"]) == ("COMPLETED", 50, 3)
    code, out, err = run_cli(capsys, "tasks", "list", "--db", str(db), "--json")
    assert code == EXIT_OK, err
    listed = json.loads(out)
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]


@pytest.mark.parametrize("value", ["0", "65"])
def test_run_with_bad_slices_creates_nothing(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """`--slices` outside 1..64 is refused naming `slices`, and no task is created."""
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(COPY_TASK), encoding="utf-8")
    code, _, err = run_cli(capsys, "run", "--db", str(db), "--slices", value, str(spec))
    assert code != EXIT_OK
    assert "slices" in err
    with task_store(db) as store:
        assert len(store) == 0
