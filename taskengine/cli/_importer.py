"""Loading JSON Lines into a SQLite collection: every bad line, flat memory, all or nothing.

:func:`import_jsonl` makes two passes, so that the write lock is held only while rows are
copied, never while JSON is parsed:

1. **Stage** (no lock on the database): each line is parsed and checked by the storage's
   own admission rules (:func:`~taskengine.storage.codec.admit_text`), and its ``_id``
   and JSON text go into a private temporary database ATTACHed to the connection (``ATTACH
   ''``: SQLite keeps a few pages of it in memory and spills the rest to a temporary
   file, so memory does not grow with the input). Every problem is staged too, one per
   line, so a file of nothing but bad lines is also flat. Duplicate ``_id`` values inside
   the file and ``_id`` values already stored are then found with SQL over the staged rows.
2. **Insert** (one write transaction): the collection is created if needed and every
   staged row is copied with one ``INSERT ... SELECT``. A row that another process
   committed in between makes the whole transaction roll back, and is reported like any
   other duplicate. Nothing is written at all when a line is bad, so a failed import never
   leaves a collection behind.

Inserting while parsing and rolling back on the first bad line would parse once, but it
would hold the write lock for the whole parse (every other writer waits: ``run``,
``tasks cancel``, ``serve``), and finding the other bad lines would still need the parse.

This module reaches into :mod:`taskengine.storage.sqlite`'s table layout on purpose: it
is the bulk path of that one adapter.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from taskengine._jsonio import parse_json_object
from taskengine._values import INT64_MAX, INT64_MIN
from taskengine.errors import (
    CollectionNotFound,
    InvalidItem,
    InvalidRequest,
    StorageError,
    TaskEngineError,
)
from taskengine.storage._sqlitems import ENV_CODE, target
from taskengine.storage.base import CollectionInfo, Environment, Storage
from taskengine.storage.codec import admit, admit_text
from taskengine.storage.sqlite import SQLiteStorage

__all__ = ["MAX_LISTED", "ImportRejected", "check_flags", "import_jsonl"]

MAX_LISTED = 100
"""Bad lines listed in full; the rest are only counted."""

_STAGE = "taskengine_import"
_BATCH = 1000
_STAGE_SCHEMA = (
    f"CREATE TABLE {_STAGE}.rows (line INTEGER PRIMARY KEY, id TEXT NOT NULL, doc TEXT NOT NULL)",
    f"CREATE TABLE {_STAGE}.problems (line INTEGER PRIMARY KEY, message TEXT NOT NULL)",
)


class ImportRejected(TaskEngineError, ValueError):
    """An import that wrote nothing: bad lines, or flags that do not fit the collection.

    Attributes:
        problems: up to :data:`MAX_LISTED` bad lines, in line order, each
            ``"line N: <JSON path>: <reason>"`` (empty when the flags were the problem).
        total: how many lines were bad (0 when the flags were the problem).
    """

    def __init__(self, message: str, problems: Iterable[str] = (), total: int = 0) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.total = total


def check_flags(
    info: CollectionInfo | None,
    name: str,
    environment: Environment,
    *,
    sandbox: bool,
    publish_plugin: bool,
) -> None:
    """Refuse flags that the collection (``None``: not created yet) cannot honour.

    ``--sandbox`` and ``--publish-plugin`` choose what a *new* collection gets; the storage
    protocol has no way to change them later, so asking for one on an existing collection
    that lacks it is an error (asking for what it already has is fine). Importing into
    ``SANDBOX`` needs a sandbox: ``--sandbox`` for a new collection.

    Raises:
        ImportRejected: naming the collection and the flag.
    """
    if info is None:
        if environment is Environment.SANDBOX and not sandbox:
            raise ImportRejected(
                f"--environment SANDBOX needs --sandbox: collection {name!r} does not exist "
                "yet, and is only created with a sandbox when --sandbox is given"
            )
        return
    for wanted, has, flag, what in (
        (sandbox, info.sandbox_enabled, "--sandbox", "a sandbox"),
        (publish_plugin, info.publish_plugin, "--publish-plugin", "the publish plugin"),
    ):
        if wanted and not has:
            raise ImportRejected(
                f"collection {name!r} already exists without {what}; {flag} only applies "
                "when import creates the collection (it cannot be added later)"
            )
    if environment is Environment.SANDBOX and not info.sandbox_enabled:
        raise ImportRejected(f"collection {name!r} has no sandbox enabled")


def import_jsonl(
    storage: SQLiteStorage,
    lines: Iterable[tuple[int, bytes]],
    collection: str,
    environment: Environment | str,
    *,
    sandbox: bool = False,
    publish_plugin: bool = False,
) -> tuple[int, CollectionInfo | None]:
    """Import numbered JSON Lines into ``collection``, all or nothing.

    Args:
        lines: ``(line number, raw bytes)`` pairs; blank lines are skipped.
        sandbox, publish_plugin: for a collection this import creates (see
            :func:`check_flags`).

    Returns:
        How many items were imported, and the collection's info if this import created it.

    Raises:
        ImportRejected: bad flags, or bad lines (every one counted, the first
            :data:`MAX_LISTED` listed): nothing was written.
        StorageError: SQLite failed, or another process held the write lock too long.
    """
    env = Environment.coerce(environment)
    flags = {"sandbox": sandbox, "publish_plugin": publish_plugin}
    check_flags(_info(storage, collection), collection, env, **flags)
    database = storage.database
    with database.read() as conn:
        conn.execute(f"ATTACH DATABASE '' AS {_STAGE}")
        try:
            staged = _stage(storage, conn, lines, collection, env)
            with storage.atomic():
                info = _info(storage, collection)
                check_flags(info, collection, env, **flags)
                created = None
                if info is None:
                    created = storage.create_collection(collection, **flags)
                coll = target(conn, collection, env)
                try:
                    with database.transaction():  # a savepoint: the conflict is reported below
                        conn.execute(
                            f"INSERT INTO taskengine_items (coll, env, id, doc)"
                            f" SELECT ?, ?, id, doc FROM {_STAGE}.rows ORDER BY id",
                            (coll, ENV_CODE[env]),
                        )
                except StorageError as exc:
                    if not isinstance(exc.__cause__, sqlite3.IntegrityError):
                        raise
                    raise _Conflict from None
        except _Conflict:
            # Another process stored some of these ids after the staging pass.
            conn.execute("BEGIN")
            try:
                _find_stored(conn, collection, env)
            finally:
                conn.execute("COMMIT")
            _reject(conn)
            raise StorageError(  # pragma: no cover - SQLite refused rows without a duplicate
                f"SQLite refused the import into {collection!r} without a duplicate _id"
            ) from None
        finally:
            conn.execute(f"DETACH DATABASE {_STAGE}")
    return staged, created


class _Conflict(Exception):
    """The insert hit an id committed since staging: everything was rolled back."""


def _info(storage: Storage, name: str) -> CollectionInfo | None:
    try:
        return storage.collection_info(name)
    except CollectionNotFound:
        return None


def _stage(
    storage: SQLiteStorage,
    conn: sqlite3.Connection,
    lines: Iterable[tuple[int, bytes]],
    collection: str,
    env: Environment,
) -> int:
    """Stage every good line and every problem; raise if there was a problem."""
    # The staging database is private and temporary: durability buys nothing.
    conn.execute(f"PRAGMA {_STAGE}.journal_mode = OFF")
    conn.execute(f"PRAGMA {_STAGE}.synchronous = OFF")
    staged = 0
    # Only the temporary database is written, so BEGIN takes no lock on the main file.
    conn.execute("BEGIN")
    try:
        for statement in _STAGE_SCHEMA:
            conn.execute(statement)
        for rows, problems in _batches(lines):
            conn.executemany(f"INSERT INTO {_STAGE}.rows VALUES (?, ?, ?)", rows)
            conn.executemany(f"INSERT INTO {_STAGE}.problems VALUES (?, ?)", problems)
            staged += len(rows)
        conn.execute(f"CREATE INDEX {_STAGE}.rows_id ON rows (id)")
        _find_repeats(conn)
        if _info(storage, collection) is not None:
            _find_stored(conn, collection, env)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    _reject(conn)
    return staged


def _batches(
    lines: Iterable[tuple[int, bytes]],
) -> Iterator[tuple[list[tuple[int, str, str]], list[tuple[int, str]]]]:
    rows: list[tuple[int, str, str]] = []
    problems: list[tuple[int, str]] = []
    for number, raw in lines:
        if not raw.strip():
            continue
        try:
            # Without its line break, a truncated line's error is at its own end.
            item = parse_json_object(raw.rstrip(b"\r\n"), source=f"line {number}")
            item_id, text = admit_text(item)
        except InvalidRequest as exc:
            problems.append((number, _syntax(exc.violations[0].description)))
        except InvalidItem as exc:
            problems.append((number, _refused(raw, exc)))
        else:
            rows.append((number, item_id, text))
        if len(rows) + len(problems) >= _BATCH:
            yield rows, problems
            rows, problems = [], []
    yield rows, problems


def _find_repeats(conn: sqlite3.Connection) -> None:
    """Stage a problem for every line whose ``_id`` an earlier line already has."""
    cursor = conn.execute(
        f"SELECT r.line, r.id, d.first FROM {_STAGE}.rows AS r JOIN"
        f" (SELECT id, min(line) AS first FROM {_STAGE}.rows GROUP BY id HAVING count(*) > 1)"
        " AS d ON d.id = r.id WHERE r.line > d.first"
    )
    _stage_problems(
        conn,
        (
            (line, f"$._id: {_quote(item_id)} appears twice in the file (first on line {first})")
            for line, item_id, first in cursor
        ),
    )


def _find_stored(conn: sqlite3.Connection, collection: str, env: Environment) -> None:
    """Stage a problem for every line whose ``_id`` the collection already holds."""
    coll = target(conn, collection, env)
    cursor = conn.execute(
        f"SELECT r.line, r.id FROM {_STAGE}.rows AS r JOIN taskengine_items AS i"
        " ON i.coll = ? AND i.env = ? AND i.id = r.id",
        (coll, ENV_CODE[env]),
    )
    _stage_problems(
        conn,
        (
            (
                line,
                f"$._id: {_quote(item_id)} is already in collection {collection!r} ({env.value})",
            )
            for line, item_id in cursor
        ),
    )


def _stage_problems(conn: sqlite3.Connection, problems: Iterator[tuple[int, str]]) -> None:
    # A line keeps its first problem (a parse error, then a repeat, then a stored id).
    batch: list[tuple[int, str]] = []
    for problem in problems:
        batch.append(problem)
        if len(batch) >= _BATCH:
            conn.executemany(f"INSERT OR IGNORE INTO {_STAGE}.problems VALUES (?, ?)", batch)
            batch = []
    conn.executemany(f"INSERT OR IGNORE INTO {_STAGE}.problems VALUES (?, ?)", batch)


def _reject(conn: sqlite3.Connection) -> None:
    total = int(conn.execute(f"SELECT count(*) FROM {_STAGE}.problems").fetchone()[0])
    if not total:
        return
    listed = conn.execute(
        f"SELECT line, message FROM {_STAGE}.problems ORDER BY line LIMIT ?", (MAX_LISTED,)
    ).fetchall()
    raise ImportRejected(
        f"{total} bad line(s); nothing imported",
        [f"line {line}: {message}" for line, message in listed],
        total,
    )


# -- describing a bad line --------------------------------------------------------------------

_ONE_LINE = re.compile(r" \(line 1 column (\d+)\)$")


def _syntax(description: str) -> str:
    """A parse error without the ``line 1`` that every single-line document has."""
    return _ONE_LINE.sub(r" (column \1)", description)


class _Number:
    """A JSON number that no storable value can hold, kept as it was written."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if value - value == 0 else _Number(text)  # inf - inf is NaN


def _parse_int(text: str) -> Any:
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else _Number(text)


def _refused(raw: bytes, exc: InvalidItem) -> str:
    """``"<JSON path>: <reason>"`` for a parsed line that storage refuses."""
    if exc.path == "_id":
        return f"$._id: {exc.reason.removeprefix('_id ')}"
    try:
        # Parsed again (only bad lines are) to keep out-of-range numbers as written.
        value = json.loads(raw, parse_float=_parse_float, parse_int=_parse_int)
    except ValueError:
        return f"$: {exc.reason}"  # e.g. a trailing comma: the reason without a path
    path, reason = _culprit(value, "$")
    return f"{path}: {reason}"


def _culprit(value: Any, path: str) -> tuple[str, str]:
    """The path of the first value inside ``value`` that storage refuses, and why.

    Each candidate is put to :func:`admit` itself, so the rules stay in one place.
    """
    if isinstance(value, _Number):
        return path, f"number out of range ({value.text})"
    if type(value) is dict:
        for key, child in value.items():
            where = path + _member(key)
            if _why(key, None) is not None:
                return where, f"key {_why(key, None)}"
            if _why("v", child) is not None:
                return _culprit(child, where)
    elif type(value) is list:
        for index, child in enumerate(value):
            if _why("v", child) is not None:
                return _culprit(child, f"{path}[{index}]")
    return path, _why("v", value) or "cannot be stored"


def _why(key: str, value: Any) -> str | None:
    """Why :func:`admit` refuses ``value`` under ``key`` in an item (``None``: it does not)."""
    if isinstance(value, _Number):
        return "number out of range"
    try:
        admit({"_id": "x", key: value} if key != "_id" else {"_id": "x", "v": value})
    except InvalidItem as exc:
        return exc.reason
    except RecursionError:
        return "nested too deeply"
    return None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _member(key: str) -> str:
    return f".{key}" if _IDENTIFIER.match(key) else f"[{_quote(key)}]"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
