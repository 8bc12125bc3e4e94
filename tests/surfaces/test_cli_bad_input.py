"""The `taskengine` command on bad input and surprises: exit 2, 5 or 130, never a traceback."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from taskengine.cli import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    build_parser,
    main,
)
from taskengine.storage.sqlite import SQLiteStorage

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run main(argv) in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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


def task_file(tmp_path: Path, text: str) -> Path:
    """Write a task file (raw JSON text, so escapes such as \\ud800 stay as written)."""
    path = tmp_path / "task.json"
    path.write_text(text, encoding="utf-8")
    return path


def task_count(capsys: pytest.CaptureFixture[str], db: Path) -> int:
    """How many tasks the database holds, as `tasks list --json` reports."""
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(db), "--json")
    assert code == EXIT_OK
    total: int = json.loads(out)["metadata"]["total"]
    return total


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
    spec = task_file(tmp_path, EDIT % value)
    extra = () if wait else ("--no-wait",)
    code, out, err = run_cli(capsys, "run", "--db", str(db), *extra, str(spec))
    assert code == EXIT_BAD_INPUT
    assert f"  {field}: " in err
    assert "Traceback" not in err
    assert out == ""
    assert task_count(capsys, db) == 0


def test_run_refuses_a_surrogate_in_a_filter_key(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    """A lone surrogate in a filter key is bad input (exit 2), not a UnicodeEncodeError."""
    spec = task_file(
        tmp_path,
        '{"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items", '
        '"filter": {"\\ud800": 1}}}',
    )
    code, _, err = run_cli(capsys, "run", "--db", str(db), str(spec))
    assert code == EXIT_BAD_INPUT
    assert "task.deleteByQueryOptions.filter.\\ud800: key is not valid Unicode" in err
    assert task_count(capsys, db) == 0


@pytest.mark.parametrize(
    ("option", "field"),
    [("--offset", "paging.offset"), ("--limit", "paging.limit")],
)
def test_tasks_list_with_a_huge_number_is_bad_input(
    capsys: pytest.CaptureFixture[str], db: Path, option: str, field: str
) -> None:
    """`tasks list` with an offset or limit beyond its range exits 2 naming the field."""
    code, _, err = run_cli(
        capsys, "tasks", "list", "--db", str(db), option, "99999999999999999999999"
    )
    assert code == EXIT_BAD_INPUT
    assert f"  {field}: must be an integer in " in err


def test_tasks_get_of_an_unencodable_id_is_not_found(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    """`tasks get` with an id that is not valid Unicode is 'not found' (exit 2)."""
    code, _, err = run_cli(capsys, "tasks", "get", "x\udcff", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "not found" in err


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


def test_exit_codes_are_documented_in_help_and_readme() -> None:
    """Every exit code is listed in `--help` and in the README's table."""
    epilog = build_parser().format_help()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXIT_INTERRUPTED == 130
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:<3}  {meaning}" in epilog
        assert f"| `{code}` |" in readme


# -- Ctrl-C in a real process ------------------------------------------------------------------


def _reader(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # end of stream

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], suffix: str) -> list[str]:
    """Lines read until one ends with ``suffix`` (bounded: 60 s per line)."""
    seen: list[str] = []
    while True:
        line = lines.get(timeout=60)
        if line == "":
            pytest.fail(f"the process ended before printing {suffix!r}: {seen[-20:]}")
        seen.append(line)
        if line.rstrip().endswith(suffix):
            return seen


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_while_the_engine_loads_exits_130(db: Path, tmp_path: Path) -> None:
    """Ctrl-C while `run` is still importing the engine exits 130 with no traceback."""
    spec = task_file(
        tmp_path,
        '{"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items"}}',
    )
    # -X importtime reports each module as its import ends: seeing taskengine.clock (the
    # engine's first import) means the engine is loading now, so SIGINT lands mid-import.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "taskengine", "run", "--db", str(db),
         str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        lines = _reader(proc.stderr)
        _wait_for(lines, " taskengine.clock")
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
def test_ctrl_c_after_the_outcome_keeps_its_exit_code(db: Path, tmp_path: Path) -> None:
    """Ctrl-C once `run` has printed the finished task (engine shutting down) keeps exit 0."""
    spec = task_file(
        tmp_path,
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
        lines = _reader(proc.stdout)
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


def test_every_lazy_export_is_listed_once() -> None:
    """The package's lazy export table names exactly `__all__` (but `__version__`)."""
    import taskengine

    table = taskengine._EXPORTS
    assert set(table) == set(taskengine.__all__) - {"__version__"}
    for name, module in table.items():
        assert getattr(taskengine, name) is getattr(sys.modules[module], name)
