"""`taskengine import`: every bad line, all or nothing, flat memory, flags, a bounded wait."""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import cli, item_count, make_items_db, run_cli, write, write_jsonl

from taskengine.cli import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, import_
from taskengine.storage.sqlite import SQLiteStorage


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
            info.name: storage.count(info.name, "LIVE").value for info in storage.list_collections()
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


def test_import_waits_a_bounded_time_for_a_writer_and_says_so(
    db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    writer: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer holding the lock makes import fail after its timeout with a clear message."""
    monkeypatch.setattr(import_, "IMPORT_BUSY_TIMEOUT", 0.2)
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


# -- the command as a newcomer meets it ----------------------------------------------------


@pytest.fixture
def items_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """'Items' (publish plugin): 50 items i000..i049 (see make_items_db)."""
    return make_items_db(tmp_path, capsys)


def test_import_reports_every_bad_line_and_imports_nothing(
    items_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad lines are reported by number, and not even the good lines are imported."""
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"_id": "a1"}\n\n{"_id": "a2",}\n{"_id": 3}\nnot json\n{"_id": "a1"}\n[1]\n',
        encoding="utf-8",
    )
    code, _, err = run_cli(
        capsys, "import", "--db", str(items_db), "--collection", "Items", str(source)
    )
    assert code == EXIT_BAD_INPUT
    assert "4 bad line(s); nothing imported" in err
    assert "line 4: $._id: must be a string" in err
    assert "line 5: not valid JSON" in err
    assert 'line 6: $._id: "a1" appears twice in the file (first on line 1)' in err
    assert "line 7: must be a JSON object" in err
    assert "line 3" not in err  # a trailing comma is fine
    assert item_count(items_db) == 50


def test_import_of_a_stored_id_imports_nothing(
    items_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An _id already in the collection is fatal: nothing from the file is imported."""
    items = [{"_id": f"new{n:04d}"} for n in range(1500)] + [{"_id": "i007"}]
    source = write_jsonl(tmp_path / "dup.jsonl", items)
    code, _, err = run_cli(
        capsys, "import", "--db", str(items_db), "--collection", "Items", str(source)
    )
    assert code == EXIT_BAD_INPUT
    assert "line 1501: $._id: \"i007\" is already in collection 'Items' (LIVE)" in err
    assert item_count(items_db) == 50


def test_import_into_the_sandbox_with_sandbox_creates_the_collection_with_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Importing into SANDBOX with --sandbox creates the collection with a sandbox enabled."""
    item = {"_id": "x", "when": {"$date": "2025-01-01T00:00:00Z"}}
    source = write_jsonl(tmp_path / "s.jsonl", [item])
    path = tmp_path / "new.db"
    code, _, err = run_cli(
        capsys,
        "import",
        "--db",
        str(path),
        "--collection",
        "C",
        "--environment",
        "SANDBOX",
        "--sandbox",
        str(source),
    )
    assert code == EXIT_OK, err
    assert item_count(path, "C", "SANDBOX") == 1
    assert item_count(path, "C", "LIVE") == 0


def test_import_of_a_missing_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing input file is a clear error."""
    code, _, err = run_cli(
        capsys,
        "import",
        "--db",
        str(tmp_path / "x.db"),
        "--collection",
        "C",
        str(tmp_path / "nope.jsonl"),
    )
    assert code == EXIT_BAD_INPUT
    assert "nope.jsonl: no such file" in err


def test_import_in_a_new_process_reports_a_bad_json_line_and_imports_nothing(
    tmp_path: Path,
) -> None:
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
