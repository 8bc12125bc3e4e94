"""`taskengine import` and read-only commands: every bad line, flat memory, flags, no blocking."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskengine import cli
from taskengine.cli import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, main
from taskengine.engine import TaskEngine
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.taskstore import SQLiteTaskStore

COPY = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Items",
        "sourceFieldKey": "name",
        "targetFieldKey": "nameCopy",
    },
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run main(argv) in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write text lines as a JSON Lines file."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def import_file(
    capsys: pytest.CaptureFixture[str], db: Path, source: Path, *flags: str
) -> tuple[int, str, str]:
    """`taskengine import --db db --collection Items [flags] source`."""
    return run_cli(capsys, "import", "--db", str(db), "--collection", "Items", *flags, str(source))


def collections(db: Path) -> dict[str, int]:
    """Each collection's number of LIVE items."""
    with SQLiteStorage(db) as storage:
        return {
            info.name: storage.count(info.name, "LIVE").value
            for info in storage.list_collections()
        }


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A database whose 'Items' collection (no sandbox, no publish plugin) holds 3 items."""
    path = tmp_path / "items.db"
    source = write_lines(tmp_path / "seed.jsonl", [f'{{"_id": "s{n}"}}' for n in range(3)])
    code, _, err = import_file(capsys, path, source)
    assert code == EXIT_OK, err
    return path


# -- every bad line ---------------------------------------------------------------------------


def test_every_bad_value_is_reported_with_its_line_and_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Syntax errors, unstorable values and bad _ids are all listed, each by line and path."""
    source = write_lines(
        tmp_path / "bad.jsonl",
        [
            '{"_id": "a", "price": Infinity}',
            '{"_id": "b", "n": 18446744073709551616}',
            '{"_id": "c", "low": -1e999}',
            "{not json",
            '{"_id": "d"}',
            '{"_id": "e", "deep": [1, {"the price": 1e999}]}',
            '{"_id": "f", "when": {"$date": "yesterday"}}',
            '{"name": "no id"}',
            '{"_id": 7}',
            '{"_id": "g", "price": 1e999}',
        ],
    )
    code, out, err = import_file(capsys, tmp_path / "new.db", source)
    assert code == EXIT_BAD_INPUT
    assert "9 bad line(s); nothing imported" in err
    for expected in (
        "line 1: not valid JSON",
        "line 2: $.n: number out of range (18446744073709551616)",
        "line 3: $.low: number out of range (-1e999)",
        "line 4: not valid JSON",
        'line 6: $.deep[1]["the price"]: number out of range (1e999)',
        "line 7: $.when: {'$date': 'yesterday'} is not an ISO-8601 date",
        "line 8: $._id: is required",
        "line 9: $._id: must be a string",
        "line 10: $.price: number out of range (1e999)",
    ):
        assert expected in err
    assert "line 5" not in err
    assert out == ""
    assert collections(tmp_path / "new.db") == {}


def test_every_duplicate_and_every_stored_id_is_reported(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each repeated _id names its first line, and each _id already stored is listed."""
    lines = [f'{{"_id": "n{n}"}}' for n in range(2500)]
    lines[1200] = '{"_id": "s1"}'
    lines[2400] = '{"_id": "s2"}'
    lines[1800] = '{"_id": "n5"}'
    lines[1900] = '{"_id": "n5"}'
    code, _, err = import_file(capsys, db, write_lines(tmp_path / "dups.jsonl", lines))
    assert code == EXIT_BAD_INPUT
    assert "4 bad line(s)" in err
    assert "line 1201: $._id: \"s1\" is already in collection 'Items' (LIVE)" in err
    assert "line 2401: $._id: \"s2\" is already in collection 'Items' (LIVE)" in err
    assert 'line 1801: $._id: "n5" appears twice in the file (first on line 6)' in err
    assert 'line 1901: $._id: "n5" appears twice in the file (first on line 6)' in err
    assert collections(db) == {"Items": 3}


def test_the_first_100_bad_lines_are_listed_and_the_rest_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past 100 bad lines the report says how many more there are, in line order."""
    lines = ['{"_id": "ok"}'] + [f'{{"_id": "x{n}", "v": 1e999}}' for n in range(250)]
    source = write_lines(tmp_path / "b.jsonl", lines)
    code, _, err = import_file(capsys, tmp_path / "new.db", source)
    assert code == EXIT_BAD_INPUT
    listed = [line for line in err.splitlines() if line.startswith("  line ")]
    assert len(listed) == 100
    assert listed[0].startswith("  line 2: ")
    assert listed[-1].startswith("  line 101: ")
    assert "250 bad line(s)" in err
    assert "... and 150 more bad line(s)" in err


# -- memory -----------------------------------------------------------------------------------


def _peak_import(tmp_path: Path, lines: int, capsys: pytest.CaptureFixture[str]) -> int:
    source = tmp_path / f"{lines}.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for n in range(lines):
            handle.write(json.dumps({"_id": f"item-{n:08d}", "name": f"name {n}", "n": n}) + "\n")
    tracemalloc.start()
    try:
        code, _, err = import_file(capsys, tmp_path / f"{lines}.db", source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == EXIT_OK, err
    return peak


def test_import_memory_does_not_grow_with_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Importing 5x more lines does not raise the Python heap's peak (streamed, not kept)."""
    small = _peak_import(tmp_path, 10_000, capsys)
    large = _peak_import(tmp_path, 50_000, capsys)
    assert large < small * 1.5 + 256 * 1024, (small, large)


# -- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "words"),
    [("--sandbox", "without a sandbox"), ("--publish-plugin", "without the publish plugin")],
)
def test_a_creation_flag_on_an_existing_collection_that_lacks_it_is_an_error(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, words: str
) -> None:
    """--sandbox/--publish-plugin cannot be added to an existing collection: one clear line."""
    source = write_lines(tmp_path / "one.jsonl", ['{"_id": "new"}'])
    code, _, err = import_file(capsys, db, source, flag)
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1
    assert f"collection 'Items' already exists {words}; {flag} only applies" in err
    assert collections(db) == {"Items": 3}


def test_a_creation_flag_an_existing_collection_already_has_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for what the collection already has imports as usual."""
    flags = ("--sandbox", "--publish-plugin")
    first = write_lines(tmp_path / "a.jsonl", ['{"_id": "a"}'])
    second = write_lines(tmp_path / "b.jsonl", ['{"_id": "b"}'])
    assert import_file(capsys, tmp_path / "x.db", first, *flags)[0] == EXIT_OK
    code, _, err = import_file(capsys, tmp_path / "x.db", second, *flags)
    assert code == EXIT_OK, err
    assert collections(tmp_path / "x.db") == {"Items": 2}


def test_importing_into_the_sandbox_of_a_new_collection_needs_the_sandbox_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--environment SANDBOX without --sandbox does not silently enable a sandbox."""
    source = write_lines(tmp_path / "a.jsonl", ['{"_id": "a"}'])
    code, _, err = import_file(capsys, tmp_path / "x.db", source, "--environment", "SANDBOX")
    assert code == EXIT_BAD_INPUT
    assert "--environment SANDBOX needs --sandbox" in err
    assert err.count("\n") == 1
    assert collections(tmp_path / "x.db") == {}


def test_import_help_says_what_the_flags_do(capsys: pytest.CaptureFixture[str]) -> None:
    """`import --help` says the creation flags only apply to a new collection."""
    code, out, _ = run_cli(capsys, "import", "--help")
    assert code == EXIT_OK
    text = " ".join(out.split())
    assert "apply only when the import creates the collection" in text
    assert "--environment SANDBOX needs a sandbox" in text


# -- readers and writers ----------------------------------------------------------------------


@pytest.fixture
def writer(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (an uncommitted write)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")  # returns once the lock is held
    conn.execute("UPDATE taskengine_collections SET sandbox = sandbox")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


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
        task_id = engine.create_task({"task": COPY}).id
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


def test_import_waits_a_bounded_time_for_a_writer_and_says_so(
    db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    writer: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer holding the lock makes import fail after its timeout with a clear message."""
    monkeypatch.setattr(cli, "IMPORT_BUSY_TIMEOUT", 0.2)
    source = write_lines(tmp_path / "a.jsonl", ['{"_id": "a"}'])
    code, _, err = import_file(capsys, db, source)
    assert code == EXIT_ERROR
    assert "database is busy: another process is writing" in err
    assert "(waited 0.2 s)" in err


def test_import_finds_bad_lines_without_the_write_lock(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], writer: sqlite3.Connection
) -> None:
    """Checking the file needs no write lock: bad lines are reported while another writes."""
    source = write_lines(tmp_path / "a.jsonl", ['{"_id": "a", "v": 1e999}', '{"_id": "s0"}'])
    code, _, err = import_file(capsys, db, source)
    assert code == EXIT_BAD_INPUT, err
    assert "line 1: $.v: number out of range (1e999)" in err
    assert "line 2: $._id: \"s0\" is already in collection 'Items' (LIVE)" in err


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
        expired = engine.create_task({"task": COPY}).id
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


def _unprivileged_command() -> tuple[list[str], dict[str, str], Any]:
    """How to run ``python -m taskengine`` as a user who cannot write the file.

    As root (who may write any file), the child drops to ``nobody``, with a system
    interpreter of the same version (this one may live under ``/root``) and this
    checkout's packages on ``PYTHONPATH``.
    """
    env = dict(os.environ)
    if os.geteuid() != 0:
        return [sys.executable], env, None
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.path.exists(python):
        pytest.skip(f"running as root, and there is no {python} for user 'nobody'")
    import attrs
    import sortedcontainers  # type: ignore[import-untyped]

    import taskengine

    paths = {str(Path(module.__file__ or "").parent.parent) for module in (attrs, sortedcontainers)}
    paths.add(str(Path(taskengine.__file__ or "").parent.parent))
    env["PYTHONPATH"] = os.pathsep.join(sorted(paths))
    return [python], env, _as_nobody


def test_tasks_list_works_on_a_file_its_user_cannot_write(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0444 file in a 0555 directory is listed by a user who cannot write either."""
    task_id = _add_task(db)
    command, env, demote = _unprivileged_command()
    folder = Path(tempfile.mkdtemp(prefix="taskengine-ro-"))
    try:
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
