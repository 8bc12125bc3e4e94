"""`taskengine serve`: refuses what is unsafe or impossible, answers, stops cleanly, and
shares a file with `run` without either running the other's task."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_runner import (
    COPY_TASK,
    EDIT_Z_TASK,
    assert_edited_and_copied_once,
    batch_done,
    cli,
    executable,
    line_reader,
    make_items_db,
    make_tagged_db,
    newest_task_id,
    read_until,
    run_cli,
    started,
    task_store,
    wait_for_line,
    wait_until,
    write,
)

from taskengine.cli import EXIT_BAD_INPUT, EXIT_OK
from taskengine.task import Task
from taskengine.taskstore import SQLiteTaskStore


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKENGINE_TOKEN", raising=False)


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """'Items' (publish plugin): 50 items (see make_items_db)."""
    return make_items_db(tmp_path, capsys)


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
        [executable(), "serve", "--db", str(db), "--port", "0", "--quiet", "--token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = wait_for_line(line_reader(proc.stdout), "Serving")
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
        _, err = proc.communicate()
    assert proc.returncode == EXIT_OK, err


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
        [executable(), "serve", "--db", str(big_db), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = line_reader(proc.stdout)
        resumed = wait_for_line(lines, "unfinished task")
        wait_for_line(lines, "Serving")
        proc.send_signal(signal.SIGTERM)
        stopped = wait_for_line(lines, "Stopped.")
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


ITEMS = 10_000
"""Items in the file: a task over them at one item per batch takes a couple of seconds."""


def _post_task(address: str, spec: dict[str, Any]) -> str:
    """Create a task through `serve`'s API; return its id."""
    conn = http.client.HTTPConnection(address, timeout=30)
    try:
        body = json.dumps({"task": spec})
        conn.request("POST", "/cms/v1/tasks", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        task_id: str = json.loads(response.read())["task"]["id"]
        return task_id
    finally:
        conn.close()


def _completed(store: SQLiteTaskStore, task_id: str) -> Task | None:
    task = store.get(task_id)
    return task if task is not None and task.is_finished else None


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to a child needs POSIX")
def test_serve_then_run_on_one_file_each_run_only_their_own_task(tmp_path: Path) -> None:
    """A task created through `serve`, and once it has committed a batch, `run copy.json` on
    the same file: `run` leaves the server's task alone, both end COMPLETED with exact
    counters, and every item was edited and copied exactly once."""
    db = make_tagged_db(tmp_path, ITEMS)
    copy = write(tmp_path / "copy.json", COPY_TASK)
    serve = ("serve", "--db", str(db), "--port", "0", "--quiet", "--batch-size", "1")
    with started(*serve) as server, task_store(db) as store:
        line = wait_for_line(server.out, "Serving")
        edit_id = _post_task(line.split("http://", 1)[1].split("/", 1)[0], EDIT_Z_TASK)
        wait_until(lambda: batch_done(store, edit_id), "the server's first batch")
        ran = cli("run", "--db", str(db), "--quiet", str(copy))
        edited = wait_until(lambda: _completed(store, edit_id), "the server's task to end")
        server.proc.send_signal(signal.SIGTERM)
        code, _, err = server.finish()
    assert code == EXIT_OK, err
    assert ran.returncode == EXIT_OK, ran.stderr
    copied = json.loads(ran.stdout)
    assert copied["status"] == "COMPLETED"
    assert copied["itemsSucceeded"] == ITEMS
    assert edited.status.value == "COMPLETED"
    assert edited.items_succeeded == ITEMS
    assert edited.items_failed == 0
    assert_edited_and_copied_once(db, ITEMS)
    owner = f"{socket.gethostname()}/{server.pid}"
    assert f"1 unfinished task(s) left alone: 1 owned by a live engine ({owner}).\n" in (ran.stderr)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to a child needs POSIX")
def test_run_then_serve_on_one_file_each_run_only_their_own_task(tmp_path: Path) -> None:
    """`run edit.json`, and once its task has committed a batch, `serve` on the same file:
    the server does not resume `run`'s task (it says whose it is), runs the copy task
    created through it, and both end COMPLETED with exact counters, every item edited and
    copied exactly once."""
    db = make_tagged_db(tmp_path, ITEMS)
    edit = write(tmp_path / "edit.json", EDIT_Z_TASK)
    run = ("run", "--db", str(db), "--batch-size", "1", "--quiet", str(edit))
    with started(*run) as runner, task_store(db) as store:
        edit_id = wait_until(lambda: newest_task_id(store), "the run's task")
        wait_until(lambda: batch_done(store, edit_id), "the run's first batch")
        with started("serve", "--db", str(db), "--port", "0", "--quiet") as server:
            *said, line = read_until(server.out, "Serving")
            copy_id = _post_task(line.split("http://", 1)[1].split("/", 1)[0], COPY_TASK)
            copied = wait_until(lambda: _completed(store, copy_id), "the server's task to end")
            code, out, err = runner.finish()
            server.proc.send_signal(signal.SIGTERM)
            served, _, served_err = server.finish()
    assert served == EXIT_OK, served_err
    assert code == EXIT_OK, err
    edited = json.loads(out)
    assert edited["id"] == edit_id
    assert edited["status"] == "COMPLETED"
    assert edited["itemsSucceeded"] == ITEMS
    assert copied.status.value == "COMPLETED"
    assert copied.items_succeeded == ITEMS
    assert_edited_and_copied_once(db, ITEMS)
    owner = f"{socket.gethostname()}/{runner.pid}"
    assert said == [
        f"Resumed 0 unfinished task(s) from {db}.\n",
        f"1 unfinished task(s) owned by a live engine ({owner}) are left alone.\n",
    ]
