"""`taskengine --db postgresql://…`: every command on a PostgreSQL database (real server)."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from pathlib import Path

import pytest
from cli_runner import COPY_TASK, run_cli, started, wait_for_line, write, write_jsonl

from taskengine.cli import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK
from taskengine.cli._common import display_db, is_postgres

psycopg = pytest.importorskip("psycopg")
from psycopg.conninfo import conninfo_to_dict  # noqa: E402

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="signals to a child need POSIX")


def url(dsn: str, password: str | None = None) -> str:
    """The ``postgresql://`` URL of a libpq DSN (with ``password`` in it, if given)."""
    params = conninfo_to_dict(dsn)
    secret = f":{password}" if password else ""
    return (
        f"postgresql://{params['user']}{secret}@{params['host']}:{params['port']}/"
        f"{params['dbname']}"
    )


def fill(db: str, count: int) -> None:
    """Give the database an 'Items' collection of ``count`` items with a 'name'."""
    from taskengine import PostgresStorage

    with PostgresStorage(db) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", [{"_id": f"i{n:05d}", "name": f"n{n}"} for n in range(count)]
        )


def tasks_json(capsys: pytest.CaptureFixture[str], db: str) -> list[dict[str, object]]:
    """The tasks `tasks list --json` reports."""
    code, out, err = run_cli(capsys, "tasks", "list", "--db", db, "--json")
    assert code == EXIT_OK, err
    tasks: list[dict[str, object]] = json.loads(out)["tasks"]
    return tasks


def test_a_postgres_dsn_is_told_from_a_file_and_its_password_is_masked() -> None:
    """`postgresql://` and `postgres://` name PostgreSQL; a password never shows."""
    assert is_postgres("postgresql://u@h/d")
    assert is_postgres("POSTGRES://u@h/d")
    assert not is_postgres("shop.db")
    assert not is_postgres("postgresql.db")
    assert display_db("postgresql://u:s3cret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert display_db("postgres://h/d?password=s3cret&x=1") == "postgres://h/d?password=***&x=1"
    assert display_db("shop:x@y.db") == "shop:x@y.db"


def test_demo_runs_every_task_type_on_postgres(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --db postgresql://…` builds its data, runs the four task types, keeps them."""
    db = url(pg_database)
    code, out, err = run_cli(capsys, "demo", "--db", db, "--items", "2000")
    assert code == EXIT_OK, err
    assert "2,000 LIVE items" in out
    tasks = tasks_json(capsys, db)
    assert len({task["type"] for task in tasks}) == 4, tasks
    assert all(task["status"] == "COMPLETED" for task in tasks), tasks
    assert f"taskengine tasks list --db {db}" in out


def test_run_a_task_file_then_tasks_list_and_get_show_it(
    pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` runs a task file on PostgreSQL; `tasks list` and `tasks get` show it."""
    db = url(pg_database)
    fill(db, 50)
    code, out, err = run_cli(
        capsys, "run", "--db", db, str(write(tmp_path / "t.json", {"task": COPY_TASK}))
    )
    assert code == EXIT_OK, err
    [task] = tasks_json(capsys, db)
    assert task["status"] == "COMPLETED"
    code, out, err = run_cli(capsys, "tasks", "list", "--db", db)
    assert code == EXIT_OK, err
    assert str(task["id"]) in out
    code, out, err = run_cli(capsys, "tasks", "get", "--db", db, str(task["id"]))
    assert code == EXIT_OK, err
    assert json.loads(out)["status"] == "COMPLETED"
    from taskengine import PostgresStorage

    with PostgresStorage(db) as storage:
        items = list(storage.find("Items", "LIVE"))
    assert all(item["nameCopy"] == item["name"] for item in items)
    assert len(items) == 50


def test_tasks_list_on_an_empty_database_shows_no_tasks(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL database with nothing in it has no tasks (no error, unlike a missing file)."""
    assert tasks_json(capsys, url(pg_database)) == []


def test_run_names_an_unknown_collection_with_the_password_masked(
    pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error that names the database shows the DSN without its password."""
    db = url(pg_database, password="s3cret")
    code, out, err = run_cli(
        capsys, "run", "--db", db, str(write(tmp_path / "t.json", {"task": COPY_TASK}))
    )
    assert code == EXIT_BAD_INPUT
    assert "unknown collection 'Items'" in err
    assert ":***@" in err
    assert "s3cret" not in out + err


@posix_only
def test_worker_runs_a_task_run_no_wait_created_and_stops_on_sigterm(
    pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker on PostgreSQL runs a task `run --no-wait` queued, and exits 0 on SIGTERM."""
    db = url(pg_database, password="s3cret")
    fill(db, 200)
    with started("worker", "--db", db, "--poll", "0.05") as worker:
        first = wait_for_line(worker.out, "Worker ")
        assert "running tasks from postgresql://postgres:***@" in first
        task_file = str(write(tmp_path / "t.json", {"task": COPY_TASK}))
        code, out, err = run_cli(capsys, "run", "--db", db, "--no-wait", task_file)
        assert code == EXIT_OK, err
        assert "s3cret" not in out + err
        task_id = json.loads(out)["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [task] = tasks_json(capsys, db)
            if task["status"] == "COMPLETED":
                break
            time.sleep(0.05)
        assert task["id"] == task_id
        assert task["status"] == "COMPLETED", task
        worker.proc.send_signal(signal.SIGTERM)
        code, out, err = worker.finish()
    assert code == EXIT_OK, err
    assert "s3cret" not in out + err


@posix_only
def test_serve_runs_a_task_posted_to_its_api_and_stops_on_sigterm(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --db postgresql://…` creates and runs a task through its REST API."""
    db = url(pg_database, password="s3cret")
    fill(db, 100)
    with started("serve", "--db", db, "--port", "0", "--quiet") as server:
        line = wait_for_line(server.out, "Serving")
        conn = http.client.HTTPConnection(line.split("http://", 1)[1].split("/", 1)[0], timeout=30)
        try:
            body = json.dumps({"task": COPY_TASK})
            conn.request("POST", "/cms/v1/tasks", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            task_id = json.loads(response.read())["task"]["id"]
        finally:
            conn.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [task] = tasks_json(capsys, db)
            if task["status"] == "COMPLETED":
                break
            time.sleep(0.05)
        assert task["id"] == task_id
        assert task["status"] == "COMPLETED", task
        server.proc.send_signal(signal.SIGTERM)
        code, out, err = server.finish()
    assert code == EXIT_OK, err
    assert "s3cret" not in line + out + err


def test_import_loads_a_file_and_refuses_bad_lines_writing_nothing(
    pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`import` on PostgreSQL: all lines in; then repeats, stored ids and bad JSON all
    reported, and nothing written."""
    db = url(pg_database)
    good = write_jsonl(tmp_path / "good.jsonl", [{"_id": f"a{n}", "v": n} for n in range(30)])
    code, out, err = run_cli(capsys, "import", "--db", db, "--collection", "Items", str(good))
    assert code == EXIT_OK, err
    assert "Imported 30 items into Items (LIVE)" in out
    bad = write(
        tmp_path / "bad.jsonl",
        '{"_id": "b1"}\n{"_id": "a3"}\n{"_id": "b1"}\nnot json\n{"_id": "b2"}\n',
    )
    code, out, err = run_cli(capsys, "import", "--db", db, "--collection", "Items", str(bad))
    assert code == EXIT_BAD_INPUT
    assert "3 bad line(s); nothing imported" in err
    assert "line 2: $._id: \"a3\" is already in collection 'Items' (LIVE)" in err
    assert 'line 3: $._id: "b1" appears twice in the file (first on line 1)' in err
    assert "line 4: " in err
    from taskengine import PostgresStorage

    with PostgresStorage(db) as storage:
        assert storage.count("Items", "LIVE").value == 30


def test_an_unreachable_server_is_one_line_with_the_password_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A DSN no server answers: one line on stderr, exit 5, no traceback, no password."""
    code, out, err = run_cli(
        capsys, "tasks", "list", "--db", "postgresql://u:s3cret@127.0.0.1:1/nothing"
    )
    assert code == EXIT_ERROR
    assert err.count("\n") == 1, err
    assert err.startswith("taskengine: error: cannot connect to PostgreSQL at ")
    assert "postgresql://u:***@127.0.0.1:1/nothing" in err
    assert "s3cret" not in out + err
    assert "Traceback" not in err


def test_without_psycopg_a_postgres_dsn_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without psycopg, `--db postgresql://…` is one line naming `taskengine[postgres]`."""
    import taskengine

    for name in list(sys.modules):
        if name.startswith(("psycopg", "taskengine.storage._pg", "taskengine._pg")) or name == (
            "taskengine.storage.postgres"
        ):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for name in ("PostgresStorage", "PostgresTaskStore"):
        monkeypatch.delattr(taskengine, name, raising=False)
    code, _out, err = run_cli(capsys, "worker", "--db", "postgresql://u:s3cret@h/d")
    assert code == EXIT_ERROR
    assert err == (
        "taskengine: error: --db postgresql://u:***@h/d is a PostgreSQL database, which "
        "needs psycopg: pip install 'taskengine[postgres]'\n"
    )
