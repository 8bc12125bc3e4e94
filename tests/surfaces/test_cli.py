"""The `taskengine` command as a whole: help, usage errors, exit codes, loading, shared pieces.

Each command has its own file: test_cli_demo, test_cli_import, test_cli_run, test_cli_tasks,
test_cli_worker, test_cli_serve.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import COPY_TASK, cli, line_reader, run_cli, wait_for_line, write
from hypothesis import given
from hypothesis import strategies as st

from taskengine.cli import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    ProgressPrinter,
    build_parser,
    exit_code_for,
    format_duration,
    format_table,
)
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import Failure, Task, TaskStatus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database whose 'Items' collection holds 3 items with a 'tags' array."""
    path = tmp_path / "items.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", [{"_id": f"i{n}", "name": "x", "tags": []} for n in range(3)]
        )
    return path


# -- help, usage errors, exit codes ---------------------------------------------------------


def test_python_dash_m_taskengine_prints_the_version() -> None:
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


def test_python_dash_m_help_and_tasks_help_list_the_commands() -> None:
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


def test_help_lists_every_command() -> None:
    """`taskengine --help` exits 0 and names every command."""
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("demo", "import", "run", "tasks", "worker", "serve"):
        assert command in result.stdout


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, Any]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from _parsers(child, f"{name} {child_name}")


def test_every_command_has_a_description_in_its_help() -> None:
    """`--help` of every command and action (run, tasks, tasks list, ...) describes it."""
    missing = [
        name
        for name, parser in _parsers(build_parser(), "taskengine")
        if len((parser.description or "").split()) < 8
    ]
    assert missing == []


def test_exit_codes_are_documented_in_help_and_readme() -> None:
    """Every exit code is listed in `--help` and in the README's table."""
    epilog = build_parser().format_help()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXIT_INTERRUPTED == 130
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:<3}  {meaning}" in epilog
        assert f"| `{code}` |" in readme


def test_no_arguments_is_a_usage_error() -> None:
    """Running `taskengine` with nothing is a usage error (exit 2) with a hint."""
    result = cli()
    assert result.returncode == 2
    assert "usage" in (result.stderr + result.stdout).lower()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Missing arguments are usage errors with exit code 2; --help exits 0."""
    assert run_cli(capsys, "run")[0] == EXIT_BAD_INPUT
    assert run_cli(capsys, "demo", "--items", "0")[0] == EXIT_BAD_INPUT
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == EXIT_OK
    assert "exit codes" in out


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


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize(
    "argv",
    [("tasks", "list"), ("--debug", "tasks", "list"), ("tasks", "list", "--debug")],
    ids=["plain", "debug-first", "debug-last"],
)
def test_an_unexpected_error_exits_5_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db: Path,
    argv: tuple[str, ...],
) -> None:
    """A bug exits 5 with one `internal error` line; --debug (anywhere) adds the traceback."""
    from taskengine.engine import TaskEngine

    monkeypatch.setattr(TaskEngine, "list_tasks", _explode)
    code, _, err = run_cli(capsys, *argv, "--db", str(db))
    assert code == EXIT_ERROR
    last = err.strip().splitlines()[-1]
    assert last.startswith("taskengine: internal error: ZeroDivisionError: boom")
    if "--debug" in argv:
        assert err.startswith("Traceback (most recent call last):")
        assert "_explode" in err
    else:
        assert err == last + "\n"
        assert "--debug" in last


# -- loading ---------------------------------------------------------------------------------


def test_importing_the_command_does_not_load_the_engine() -> None:
    """`import taskengine.cli` leaves the engine unloaded, so main() owns Ctrl-C while it loads."""
    probe = (
        "import sys, taskengine.cli\n"
        "print(sorted(m for m in ('taskengine.engine', 'taskengine.storage') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_while_the_engine_loads_exits_130(db: Path, tmp_path: Path) -> None:
    """Ctrl-C while `run` is still importing the engine exits 130 with no traceback."""
    spec = write(
        tmp_path / "task.json",
        '{"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items"}}',
    )
    # -X importtime reports each module as its import ends: seeing taskengine.clock (the
    # engine's first import) means the engine is loading now, so SIGINT lands mid-import.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "taskengine", "run", "--db", str(db), str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        lines = line_reader(proc.stderr)
        wait_for_line(lines, " taskengine.clock")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        rest: list[str] = []
        while (line := lines.get(timeout=60)) != "":
            rest.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    messages = [line for line in rest if not line.startswith("import time:")]
    assert proc.returncode == EXIT_INTERRUPTED, messages
    assert messages == ["taskengine: interrupted\n"]
    with SQLiteStorage(db) as storage:
        assert storage.count("Items", "LIVE").value == 3


def test_every_lazy_export_is_listed_once() -> None:
    """The package's lazy export table names exactly `__all__` (but `__version__`)."""
    import taskengine

    table = taskengine._EXPORTS
    assert set(table) == set(taskengine.__all__) - {"__version__"}
    for name, module in table.items():
        assert getattr(taskengine, name) is getattr(sys.modules[module], name)


# -- shared pieces: exit code of an outcome, progress, text ----------------------------------


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
def test_exit_code_is_a_function_of_the_outcome(status: TaskStatus, failed: int, code: str) -> None:
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
    printer = ProgressPrinter(stream, "COPY_TASK", tty=True)
    printer.update(running)
    printer.finish(_task(TaskStatus.COMPLETED, 0, None))
    text = stream.getvalue()
    assert text.startswith("\r")
    assert "100.0%" in text
    assert text.endswith("\n")
    plain = io.StringIO()
    printer = ProgressPrinter(plain, "COPY_TASK", tty=False, interval=0)
    printer.update(running)
    assert (
        plain.getvalue()
        == "COPY_TASK: 100% 10/10 items (2 failed), " + plain.getvalue().split(", ", 1)[1]
    )
    assert "\r" not in plain.getvalue()


def test_progress_printer_leaves_out_of_the_rate_what_was_done_before() -> None:
    """A resumed task's rate counts only the items done since it was followed, and a bar
    drawn in place is ended (once) before other text."""
    running = _task(TaskStatus.RUNNING, 0, None)
    stream = io.StringIO()
    printer = ProgressPrinter(stream, "COPY_TASK", tty=True, done_before=10)
    printer.update(running)
    assert " 0 items/s" in stream.getvalue()
    printer.end_line()
    printer.end_line()
    assert stream.getvalue().endswith("\x1b[K\n")
    plain = io.StringIO()
    ProgressPrinter(plain, "COPY_TASK", tty=False).end_line()
    assert plain.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0001, "<1 ms"),
        (0.0304, "30 ms"),
        (0.9994, "999 ms"),
        (2.44, "2.4 s"),
        (185, "3 min 05 s"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    """The demo summary never says "0.0 s" for sub-second work."""
    assert format_duration(seconds) == text


def test_format_table_aligns_columns() -> None:
    """Columns are padded to their widest cell."""
    assert format_table(("A", "BB"), [("xxx", "y")]) == "A    BB\n---  --\nxxx  y"


# -- end to end --------------------------------------------------------------------------------


def test_import_then_run_then_demo_each_exit_0_in_a_new_process(tmp_path: Path) -> None:
    """import a JSONL file, run a task on it, then `demo` on a small sample: all exit 0."""
    db = tmp_path / "new.db"
    lines = "".join(json.dumps({"_id": f"k{n}", "name": f"n{n}"}) + "\n" for n in range(25))
    source = write(tmp_path / "items.jsonl", lines)
    imported = cli("import", "--db", str(db), "--collection", "Items", str(source))
    assert imported.returncode == 0, imported.stderr
    ran = cli("run", "--db", str(db), str(write(tmp_path / "t.json", {"task": COPY_TASK})))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["itemsSucceeded"] == 25
    demo = cli("demo", "--items", "300", "--db", str(tmp_path / "demo.db"))
    assert demo.returncode == 0, demo.stderr
    for kind in ("DELETE_BY_QUERY", "COPY_FIELD_DATA", "EDIT_FIELD_DATA", "UPDATE_PUBLISH_STATUS"):
        assert kind in demo.stdout
