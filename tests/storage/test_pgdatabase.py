"""PgDatabase against a real PostgreSQL server: transactions, threads, schema, errors, notify."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from taskengine.errors import StorageError
from taskengine.storage._pgdatabase import (
    Notification,
    PgDatabase,
    PostgresError,
    TransactionConflict,
)
from taskengine.storage._pgerrors import driver_error

WAIT = 5.0
"""The longest any test waits for something that should happen at once."""


@pytest.fixture
def db(pg_database: str) -> Iterator[PgDatabase]:
    """A PgDatabase on a fresh database holding a table ``t (k TEXT PRIMARY KEY, v INT)``."""
    with PgDatabase(pg_database, max_size=4) as database:
        with database.transaction() as conn:
            conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        yield database


def _rows(dsn: str) -> list[tuple[str, int]]:
    """The rows of ``t`` as another session sees them."""
    with psycopg.connect(dsn) as conn:
        return [(k, v) for k, v in conn.execute("SELECT k, v FROM t ORDER BY k")]


# Transactions


def test_transaction_commits_on_clean_exit(db: PgDatabase, pg_database: str) -> None:
    """Writes in a transaction are visible to other sessions once it exits cleanly."""
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1), ('b', 2)")
        assert _rows(pg_database) == []
    assert _rows(pg_database) == [("a", 1), ("b", 2)]


def test_exception_rolls_back_the_transaction(db: PgDatabase, pg_database: str) -> None:
    """An exception leaving the block rolls everything back and propagates unchanged."""

    def failing() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES ('a', 1)")
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        failing()
    assert _rows(pg_database) == []


def test_nested_failure_undoes_only_its_savepoint(db: PgDatabase, pg_database: str) -> None:
    """A caught failure in a nested level undoes only that level's writes."""

    def failing() -> None:
        with db.transaction() as inner:
            inner.execute("INSERT INTO t VALUES ('b', 2)")
            raise ValueError("inner")

    with db.transaction() as outer:
        outer.execute("INSERT INTO t VALUES ('a', 1)")
        with pytest.raises(ValueError, match="inner"):
            failing()
        with db.transaction() as inner:
            inner.execute("INSERT INTO t VALUES ('c', 3)")
    assert _rows(pg_database) == [("a", 1), ("c", 3)]


def test_nested_sql_error_is_recoverable(db: PgDatabase, pg_database: str) -> None:
    """A failed statement in a nested level leaves the outer transaction usable."""
    with db.transaction() as outer:
        outer.execute("INSERT INTO t VALUES ('a', 1)")
        with pytest.raises(PostgresError) as caught, db.transaction() as inner:
            inner.execute("INSERT INTO t VALUES ('a', 2)")
        assert caught.value.sqlstate == "23505"
        outer.execute("INSERT INTO t VALUES ('b', 2)")
    assert _rows(pg_database) == [("a", 1), ("b", 2)]


def test_failure_propagating_from_nested_level_rolls_back_all(
    db: PgDatabase, pg_database: str
) -> None:
    """An exception that leaves every level rolls back the outer writes too."""

    def failing() -> None:
        with db.transaction() as outer:
            outer.execute("INSERT INTO t VALUES ('a', 1)")
            with db.transaction() as inner:
                inner.execute("INSERT INTO t VALUES ('b', 2)")
                raise RuntimeError("deep")

    with pytest.raises(RuntimeError, match="deep"):
        failing()
    assert _rows(pg_database) == []


def test_caught_statement_error_prevents_commit(db: PgDatabase, pg_database: str) -> None:
    """A statement error caught inside the block makes the commit fail, not silently roll
    back, and nothing is kept."""

    def swallowing() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES ('a', 1)")
            try:
                conn.execute("INSERT INTO t VALUES ('a', 2)")
            except psycopg.errors.UniqueViolation:
                pass

    with pytest.raises(PostgresError, match="nothing in it was committed"):
        swallowing()
    assert _rows(pg_database) == []
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('b', 2)")
    assert _rows(pg_database) == [("b", 2)]


def test_transaction_is_reentrant_on_one_connection(db: PgDatabase) -> None:
    """Nested transactions and reads in one thread get the outermost connection."""
    with db.transaction() as outer:
        with db.transaction() as inner, db.read() as reader:
            assert inner is outer
            assert reader is outer
        backend = outer.info.backend_pid
    with db.transaction() as again:
        assert again.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert again.info.backend_pid == backend  # the pool's one idle connection


def test_threads_get_their_own_transactions(db: PgDatabase) -> None:
    """Another thread neither shares the connection nor sees uncommitted writes."""
    written = threading.Event()
    checked = threading.Event()
    seen: dict[str, object] = {}

    def other() -> None:
        written.wait(WAIT)
        with db.read() as conn:
            seen["pid"] = conn.info.backend_pid
            seen["rows"] = conn.execute("SELECT count(*) FROM t").fetchone()
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        written.set()
        assert checked.wait(WAIT)
        mine = conn.info.backend_pid
    thread.join(WAIT)
    assert seen["pid"] != mine
    assert seen["rows"] == (0,)
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_many_threads_commit_everything(db: PgDatabase) -> None:
    """8 threads on a pool of 4 each commit 25 transactions; every row arrives."""

    def work(n: int) -> None:
        for i in range(25):
            with db.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (%s, %s)", (f"{n}-{i}", i))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)


def test_read_outside_a_transaction_is_autocommit(db: PgDatabase) -> None:
    """read() outside transaction() gives an autocommit connection with no open transaction."""
    with db.read() as conn:
        assert conn.autocommit
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_read_inside_a_transaction_sees_its_writes(db: PgDatabase) -> None:
    """read() inside transaction() sees the transaction's uncommitted writes."""
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        with db.read() as reader:
            assert reader.execute("SELECT v FROM t WHERE k = 'a'").fetchone() == (1,)


def test_transaction_inside_read_uses_the_same_connection(db: PgDatabase) -> None:
    """transaction() inside read() runs on the read's connection and commits."""
    with db.read() as reader:
        with db.transaction() as conn:
            assert conn is reader
            conn.execute("INSERT INTO t VALUES ('a', 1)")
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)


# Schema versions

_STATEMENTS = ["CREATE TABLE items (id TEXT PRIMARY KEY)", "INSERT INTO items VALUES ('x')"]
"""Not idempotent on purpose: running them twice fails."""


def test_ensure_schema_creates_once_per_version(db: PgDatabase) -> None:
    """A fresh database gets the tables and version 1; the same version writes nothing."""
    assert db.schema_version("items") == 0
    assert db.ensure_schema("items", 1, _STATEMENTS) == 0
    assert db.schema_version("items") == 1
    assert db.ensure_schema("items", 1, _STATEMENTS) == 1
    assert db.schema_version("other") == 0
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_ensure_schema_upgrade_returns_the_old_version(db: PgDatabase) -> None:
    """A higher version runs its statements and returns the version found."""
    db.ensure_schema("items", 1, _STATEMENTS)
    assert db.ensure_schema("items", 2, ["ALTER TABLE items ADD COLUMN n INTEGER"]) == 1
    assert db.schema_version("items") == 2


def test_ensure_schema_refuses_a_newer_version(db: PgDatabase) -> None:
    """A database at a newer version is refused and left unchanged."""
    db.ensure_schema("items", 3, _STATEMENTS)
    with pytest.raises(PostgresError, match="newer than this taskengine's 2"):
        db.ensure_schema("items", 2, ["DROP TABLE items"])
    assert db.schema_version("items") == 3
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_ensure_schema_failure_keeps_nothing(db: PgDatabase) -> None:
    """A failing statement raises PostgresError naming the component; nothing is kept."""
    with pytest.raises(PostgresError, match="create the items schema"):
        db.ensure_schema("items", 1, ["CREATE TABLE items (id TEXT)", "CREATE TABLE bad ("])
    assert db.schema_version("items") == 0
    assert db.ensure_schema("items", 1, _STATEMENTS) == 0


def test_ensure_schema_concurrent_first_use(pg_database: str) -> None:
    """4 sessions creating the same schema at once run its statements exactly once."""
    barrier = threading.Barrier(4)

    def first_use(_: int) -> int:
        with PgDatabase(pg_database, max_size=1) as database:
            barrier.wait(WAIT)
            return database.ensure_schema("items", 1, _STATEMENTS)

    with ThreadPoolExecutor(4) as pool:
        found = sorted(pool.map(first_use, range(4)))
    assert found == [0, 1, 1, 1]
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


# Errors


def test_bad_sql_in_read_is_a_storage_error(db: PgDatabase) -> None:
    """A syntax error in read() is a PostgresError naming the action, from the driver's."""
    with pytest.raises(StorageError) as caught, db.read() as conn:
        conn.execute("SELEC 1")
    error = caught.value
    assert isinstance(error, PostgresError)
    assert (error.action, error.sqlstate) == ("read", "42601")
    assert isinstance(error.__cause__, psycopg.Error)
    assert str(error).startswith(f"PostgreSQL could not read on {db.location}: ")
    assert not error.retryable


def test_bad_sql_in_transaction_is_a_storage_error(db: PgDatabase, pg_database: str) -> None:
    """A failing statement in transaction() is a PostgresError; the writes are undone."""

    def failing() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES ('a', 1)")
            conn.execute("INSERT INTO missing VALUES (1)")

    with pytest.raises(PostgresError, match="run a statement") as caught:
        failing()
    assert caught.value.sqlstate == "42P01"
    assert _rows(pg_database) == []


def test_serialization_failure_is_a_retryable_conflict(db: PgDatabase) -> None:
    """A concurrent update under REPEATABLE READ raises TransactionConflict (40001)."""
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1)")

    def conflicting() -> None:
        with db.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT v FROM t WHERE k = 'a'")
            other = threading.Thread(target=_update_elsewhere, args=(db,))
            other.start()
            other.join(WAIT)
            conn.execute("UPDATE t SET v = v + 1 WHERE k = 'a'")

    with pytest.raises(TransactionConflict) as caught:
        conflicting()
    assert caught.value.sqlstate == "40001"
    assert caught.value.retryable
    assert isinstance(caught.value, StorageError)
    with db.read() as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (11,)


def _update_elsewhere(db: PgDatabase) -> None:
    with db.transaction() as conn:
        conn.execute("UPDATE t SET v = v + 10 WHERE k = 'a'")


def test_deadlock_is_a_retryable_conflict() -> None:
    """SQLSTATE 40P01 (deadlock) maps to TransactionConflict like 40001."""
    error = driver_error("commit", "postgresql://x", psycopg.errors.DeadlockDetected("deadlock"))
    assert type(error) is TransactionConflict
    assert error.sqlstate == "40P01"


def test_postgres_error_pickles() -> None:
    """A PostgresError survives pickling with its fields and message."""
    error = TransactionConflict("commit", "postgresql://h/db", "conflict", "40001")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is TransactionConflict
    assert (again.action, again.location, again.detail, again.sqlstate) == (
        "commit",
        "postgresql://h/db",
        "conflict",
        "40001",
    )
    assert str(again) == str(error)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connection_is_a_storage_error() -> None:
    """No server on the port: PostgresError("connect") at once, the password never shown."""
    port = _closed_port()
    started = time.monotonic()
    dsn = f"postgresql://someone:secret@127.0.0.1:{port}/db"
    with pytest.raises(PostgresError) as caught:
        PgDatabase(dsn, connect_timeout=2)
    assert time.monotonic() - started < WAIT
    assert caught.value.action == "connect"
    assert "secret" not in str(caught.value)
    assert caught.value.location == f"postgresql://someone@127.0.0.1:{port}/db"


def test_silent_server_times_out_as_storage_error() -> None:
    """A server that accepts but never answers: PostgresError after the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(PostgresError, match="could not connect"):
            PgDatabase(f"postgresql://u@127.0.0.1:{port}/db", connect_timeout=2)
        assert 1.5 < time.monotonic() - started < 2 + WAIT


def test_invalid_dsn_is_a_storage_error() -> None:
    """A DSN libpq cannot parse is refused as PostgresError."""
    with pytest.raises(PostgresError, match="parse the DSN"):
        PgDatabase("host=x bad-without-equals")


def test_full_pool_times_out_as_storage_error(pg_database: str) -> None:
    """With every connection held, another thread's read fails after pool_timeout."""
    with PgDatabase(pg_database, max_size=1, pool_timeout=0.3) as database:
        failed: list[BaseException] = []

        def read() -> None:
            try:
                with database.read():
                    pass
            except BaseException as exc:
                failed.append(exc)

        with database.transaction():
            thread = threading.Thread(target=read)
            thread.start()
            thread.join(WAIT)
        assert len(failed) == 1
        assert isinstance(failed[0], PostgresError)
        assert failed[0].action == "get a connection from the pool"


def test_closed_database_refuses_use(pg_database: str) -> None:
    """After close(), transactions, reads and listen raise StorageError; close is idempotent."""
    database = PgDatabase(pg_database)
    listener = database.listen(["c"])
    database.close()
    database.close()
    assert database.closed
    assert listener.closed
    assert "closed" in repr(database)
    for use in (database.transaction, database.read):
        with pytest.raises(StorageError, match="is closed"), use():
            pass
    with pytest.raises(StorageError, match="is closed"):
        database.listen(["c"])


def test_use_from_another_process_is_refused(db: PgDatabase) -> None:
    """A PgDatabase opened by another process (before a fork) refuses to be used."""
    db._pid = -1
    with pytest.raises(StorageError, match="open a new PgDatabase"), db.read():
        pass


@pytest.mark.parametrize("missing", ["psycopg", "psycopg_pool"])
def test_missing_driver_names_the_extra(missing: str) -> None:
    """Without psycopg or its pool, importing PgDatabase says which extra to install."""
    code = f"import sys; sys.modules[{missing!r}] = None\nimport taskengine.storage._pgdatabase"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
    assert "pip install 'taskengine[postgres]'" in result.stderr
    assert f"({missing} is not installed)" in result.stderr


# LISTEN / NOTIFY


def test_notify_reaches_a_listener(db: PgDatabase) -> None:
    """A notification sent outside a transaction arrives with its channel and payload."""
    with db.listen(["wake", "Tasks-1"]) as listener:
        db.notify("Tasks-1", "task 7")
        got = listener.get(timeout=WAIT)
        assert isinstance(got, Notification)
        assert (got.channel, got.payload) == ("Tasks-1", "task 7")
        db.notify("elsewhere", "ignored")
        db.notify("wake")
        assert listener.get(timeout=WAIT) == Notification("wake", "", got.pid)
        assert listener.get(timeout=0.05) is None


def test_notify_in_a_transaction_arrives_on_commit_only(db: PgDatabase) -> None:
    """NOTIFY in a transaction is delivered when it commits and never if it rolls back."""

    def rolled_back() -> None:
        with db.transaction():
            db.notify("wake", "rolled back")
            raise KeyError("undo")

    with db.listen(["wake"]) as listener:
        with pytest.raises(KeyError, match="undo"):
            rolled_back()
        with db.transaction():
            db.notify("wake", "committed")
            assert listener.get(timeout=0.2) is None
        got = listener.get(timeout=WAIT)
        assert got is not None
        assert got.payload == "committed"
        assert listener.get(timeout=0.1) is None


def test_listener_iterates_until_closed(db: PgDatabase) -> None:
    """Iterating a listener yields notifications; close() from another thread ends it soon."""
    received: list[str] = []
    with db.listen(["wake"]) as listener:

        def consume() -> None:
            received.extend(n.payload for n in listener)

        thread = threading.Thread(target=consume)
        thread.start()
        for n in range(3):
            db.notify("wake", str(n))
        deadline = time.monotonic() + WAIT
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        listener.close()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1.0
    assert received == ["0", "1", "2"]


def test_oversized_payload_is_a_storage_error(db: PgDatabase) -> None:
    """PostgreSQL's refusal of a payload over 8000 bytes is a PostgresError."""
    with pytest.raises(PostgresError, match="notify 'wake'"):
        db.notify("wake", "x" * 9000)


def test_listen_needs_a_channel(db: PgDatabase) -> None:
    """listen() with no channel is a ValueError."""
    with pytest.raises(ValueError, match="at least one channel"):
        db.listen([])
