"""``PgDatabase``: the one owner of PostgreSQL connections, shared by every PostgreSQL part.

Item storage and the task store may share one ``PgDatabase``, so that a batch's item
writes and the task's checkpoint commit in one transaction (as SQLite's ``Database`` does
for one file). Everything PostgreSQL-specific about connections lives here:

* a ``psycopg_pool.ConnectionPool`` (at least 1, at most ``max_size`` connections, each in
  autocommit mode); construction connects once first, so a wrong DSN or an unreachable
  server fails at once with the driver's reason rather than after the pool's timeout;
* explicit transactions in one place (:meth:`PgDatabase.transaction`), reentrant per
  thread: the outermost level binds a pooled connection to the calling thread and runs
  ``BEGIN``, nested levels on that thread get the same connection and a ``SAVEPOINT``, so
  a failing inner block undoes only its own writes when its exception is caught, and
  everything when it is not (a cleanly ended level's savepoint is released lazily, by
  the next ``SAVEPOINT`` of its depth in the same round trip, or by ``COMMIT``). Other
  threads get other connections: they see only what was committed (``READ COMMITTED``);
* :meth:`PgDatabase.read` runs on the thread's transaction when there is one (reads see
  its uncommitted writes), else on a pooled autocommit connection;
* a transaction is never committed after one of its statements failed: PostgreSQL would
  turn the ``COMMIT`` into a silent ``ROLLBACK``, so it is rolled back and reported;
* components version their tables in a ``taskengine_schema`` table
  (:meth:`PgDatabase.ensure_schema`); creation runs in one transaction under a
  transaction-level advisory lock, so first uses racing from many processes create
  everything once;
* ``LISTEN``/``NOTIFY`` (:meth:`PgDatabase.notify`, :meth:`PgDatabase.listen`), the
  listener (``_pglisten``) on a dedicated connection outside the pool;
* every psycopg error leaving a public call becomes :class:`PostgresError` (a
  ``StorageError``, in ``_pgerrors``) naming the action and the server, never the
  password, raised ``from`` the original; serialization failures and deadlocks are
  :class:`TransactionConflict`, whose transaction may simply be run again.

A ``PgDatabase`` belongs to the process that opened it (connections cannot cross a
``fork``): a child process opens its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

from taskengine.errors import StorageError
from taskengine.storage._pgerrors import (
    PostgresError,
    TransactionConflict,
    driver_error,
    missing_extra,
)
from taskengine.storage._pglisten import Listener, Notification

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise missing_extra(exc) from exc

# The errors and the listener are part of this module's interface.
__all__ = [
    "Listener",
    "Notification",
    "PgDatabase",
    "PostgresError",
    "TransactionConflict",
    "TransactionStatus",
]

Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS taskengine_schema ("
    "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)
# One key for every component's schema changes: "taskeng1" as a signed 64-bit integer.
_SCHEMA_LOCK = 0x7461736B656E6731

# Dead connections (a network partition, a machine that vanished) fail within about 25-30 s
# instead of hanging until the operating system gives up (hours). On the client, libpq's
# TCP keepalives and TCP_USER_TIMEOUT, unless the DSN sets them: a statement waiting for
# a dead server fails, and the engine retries, then lets the task go.
_CLIENT_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds of unacknowledged data
}
# On the server, the same for the session's socket, unless set already (by the DSN's
# ``options``, PGOPTIONS, the role, the server's configuration): a session whose client
# vanished inside a transaction ends, and its row locks (a batch's fence, its items) are
# released, so another engine can take the task over once the lease runs out. Settings a
# server does not know (tcp_user_timeout before PostgreSQL 12) are left out; on a Unix
# socket they do nothing. JIT is off the same way: it compiles a statement whose
# estimated cost passes ``jit_above_cost``, and a set-based batch's per-row expressions
# (an array edit's) are costed that high: compiling took 49 ms of a 155 ms batch of
# 5,000 rows, and no statement here runs long enough to win it back.
_SERVER_SETTINGS = (
    "SELECT set_config(s.name, v.value, false) FROM pg_settings AS s JOIN (VALUES"
    " ('tcp_keepalives_idle', '10'), ('tcp_keepalives_interval', '5'),"
    " ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '30000'), ('jit', 'off'))"
    " AS v(name, value)"
    " ON s.name = v.name WHERE s.source = 'default'"
)


class _ThreadState(threading.local):
    conn: Connection | None = None
    depth = 0
    # Depths whose last savepoint ended cleanly but is not released yet (see transaction).
    unreleased: frozenset[int] = frozenset()


class PgDatabase:
    """A pool of PostgreSQL connections with per-thread transactions and typed errors.

    Args:
        dsn: a libpq connection string, ``postgresql://user@host:port/database`` or
            ``host=... dbname=...``.
        max_size: the most connections the pool opens (transactions and reads in progress
            at once; more wait for one up to ``pool_timeout``).
        connect_timeout: seconds to wait for the server when connecting (at least 2:
            libpq rounds shorter timeouts up).
        pool_timeout: seconds to wait for a free pooled connection.

    Dead connections: unless the DSN sets them, connections use TCP keepalives (idle 10 s,
    then 3 probes 5 s apart) and a TCP user timeout of 30 s, on both ends (the server's
    ``tcp_keepalives_*`` and ``tcp_user_timeout`` are set for each session whose server
    defaults are in force). A connection to a server that became unreachable fails within
    about 30 s instead of hanging, and a session whose client vanished mid-transaction is
    ended by the server, releasing its locks.

    Raises:
        PostgresError: the DSN is invalid or the server cannot be reached.
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 8,
        connect_timeout: float = 10.0,
        pool_timeout: float = 30.0,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise PostgresError("parse the DSN", "<invalid DSN>", str(exc)) from exc
        self.location = _location(params)
        self.max_size = max_size
        self._dsn = dsn
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(connect_timeout)),
        }
        if "application_name" not in params:
            self._kwargs["application_name"] = "taskengine"
        for name, value in _CLIENT_KEEPALIVE.items():
            if name not in params:
                self._kwargs[name] = value
        self._state = _ThreadState()
        self._pid = os.getpid()
        self._closed = False
        self._close_lock = threading.Lock()
        self._listeners: weakref.WeakSet[Listener] = weakref.WeakSet()
        # One direct connection first: the pool only logs why it cannot connect.
        self._connect().close()
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            dsn,
            kwargs=self._kwargs,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=pool_timeout,
            configure=_configure,
            name=f"taskengine {self.location}",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._error("connect", exc) from exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PgDatabase {self.location} {state}>"

    def __enter__(self) -> PgDatabase:
        """Use as a context manager: the database is closed on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the database."""
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on the calling thread's connection; reentrant in the same thread.

        The outermost level binds a pooled connection to the thread and runs ``BEGIN``;
        it commits on a clean exit. Nested levels get the same connection and a
        savepoint. An exception rolls back the level it leaves (and, if it propagates,
        every level above). Do not commit or roll back through the connection itself.

        Raises:
            TransactionConflict: a serialization failure or deadlock; run it again.
            PostgresError: the database is closed, no connection was free within
                ``pool_timeout``, or PostgreSQL failed (from the original).
        """
        with self._bound() as conn:
            state = self._state
            depth = state.depth
            savepoint = f"taskengine_{depth}"
            # A nested level that ends cleanly leaves its savepoint in place instead of
            # spending a round trip on RELEASE: the next level at the same depth
            # releases it in the same round trip as its own SAVEPOINT (releasing also
            # drops every later savepoint), and COMMIT or ROLLBACK of the transaction
            # ends them all. So at most one unreleased savepoint per depth exists, and
            # ROLLBACK TO a name always finds the block's own, the most recent of it.
            if depth == 0:
                begin = "BEGIN"
            elif depth in state.unreleased:
                begin = f"RELEASE SAVEPOINT {savepoint}; SAVEPOINT {savepoint}"
            else:
                begin = f"SAVEPOINT {savepoint}"
            state.unreleased = frozenset(d for d in state.unreleased if d < depth)
            try:
                conn.execute(begin)
            except psycopg.Error as exc:
                raise self._error("begin a transaction", exc) from exc
            state.depth = depth + 1
            try:
                yield conn
            except BaseException as exc:
                state.depth = depth
                state.unreleased = frozenset(d for d in state.unreleased if d < depth)
                _rollback(conn, depth, savepoint)
                if isinstance(exc, psycopg.Error):
                    raise self._error("run a statement in a transaction", exc) from exc
                raise
            state.depth = depth
            status = conn.info.transaction_status
            if status != TransactionStatus.INTRANS:
                state.unreleased = frozenset(d for d in state.unreleased if d < depth)
                _rollback(conn, depth, savepoint)
                reason = (
                    "a statement failed inside the transaction and its error was caught "
                    "there; nothing in it was committed"
                    if status == TransactionStatus.INERROR
                    else "the transaction was ended inside its block"
                )
                raise PostgresError("commit", self.location, reason)
            if depth > 0:
                state.unreleased |= {depth}
                return
            state.unreleased = frozenset()
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                _rollback(conn, depth, savepoint)
                raise self._error("commit", exc) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads: the thread's transaction when inside
        :meth:`transaction`, else a pooled connection in autocommit mode.

        Raises:
            PostgresError: the database is closed, no connection was free, or PostgreSQL
                failed (from the original).
        """
        with self._bound() as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                raise self._error("read", exc) from exc

    @contextlib.contextmanager
    def spare(self, timeout: float = 0.05) -> Iterator[Connection | None]:
        """A second pooled connection for the calling thread's work, in autocommit mode,
        to hand to a helper thread (never the thread's own transaction); ``None`` when
        the pool has none free within ``timeout`` seconds (the caller then does without).

        Errors of statements run on it are the caller's to handle (raw ``psycopg``).

        Raises:
            StorageError: the database is closed.
        """
        self._ensure_open()
        try:
            conn = self._pool.getconn(timeout=timeout)
        except psycopg.Error:
            yield None
            return
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def ensure_schema(self, component: str, version: int, statements: Sequence[str]) -> int:
        """Run a component's ``CREATE ... IF NOT EXISTS`` statements once per version.

        Records ``version`` for ``component`` in ``taskengine_schema`` and returns the
        version that was there before (0 for a new database), so the caller can migrate.
        When that version is already recorded nothing is written and no lock is taken;
        otherwise everything runs in one transaction holding an advisory lock, so
        concurrent first uses (threads or processes) run the statements once.

        Raises:
            PostgresError: the database holds a newer version than this code knows, or a
                statement failed (nothing of this call is kept).
        """
        found = self.schema_version(component)
        self._check_schema(component, found, version)
        if found == version:
            return found
        with self.transaction() as conn:
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA_TABLE)
                row = conn.execute(
                    "SELECT version FROM taskengine_schema WHERE component = %s", (component,)
                ).fetchone()
                found = 0 if row is None else int(row[0])
                self._check_schema(component, found, version)
                if found < version:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO taskengine_schema (component, version) VALUES (%s, %s) "
                        "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                        (component, version),
                    )
            except psycopg.Error as exc:
                raise self._error(f"create the {component} schema", exc) from exc
        return found

    def schema_version(self, component: str) -> int:
        """The schema version recorded for ``component`` (0: none)."""
        with self.read() as conn:
            row = conn.execute("SELECT to_regclass('taskengine_schema') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                return 0
            row = conn.execute(
                "SELECT version FROM taskengine_schema WHERE component = %s", (component,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def notify(self, channel: str, payload: str = "") -> None:
        """Send ``payload`` to the listeners of ``channel``.

        Inside :meth:`transaction` it is sent when the transaction commits (and never if
        it rolls back); outside, at once.

        Raises:
            PostgresError: PostgreSQL refused it (a payload over 8000 bytes, ...).
        """
        with self._bound() as conn:
            try:
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
            except psycopg.Error as exc:
                raise self._error(f"notify {channel!r}", exc) from exc

    def listen(self, channels: Iterable[str]) -> Listener:
        """A :class:`Listener` for ``channels`` on a new connection of its own.

        It receives what is sent after this call returns; :meth:`close` closes it.

        Raises:
            ValueError: ``channels`` is empty.
            PostgresError: the database is closed, or the connection or ``LISTEN`` failed.
        """
        names = tuple(channels)
        if not names:
            raise ValueError("listen to at least one channel")
        self._ensure_open()
        listener = Listener(self._connect(), names, self.location)
        self._listeners.add(listener)
        return listener

    def close(self) -> None:
        """Close every connection (and listener); later use raises ``StorageError``.
        Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for listener in list(self._listeners):
            listener.close()
        self._pool.close()

    @contextlib.contextmanager
    def _bound(self) -> Iterator[Connection]:
        """The connection bound to the calling thread, checked out of the pool by the
        outermost caller and returned when it is done."""
        state = self._state
        if state.conn is not None:
            yield state.conn
            return
        self._ensure_open()
        try:
            conn = self._pool.getconn()
        except psycopg.Error as exc:
            raise self._error("get a connection from the pool", exc) from exc
        state.conn = conn
        try:
            yield conn
        finally:
            state.conn = None
            state.depth = 0
            state.unreleased = frozenset()
            # The pool rolls back a connection left in a transaction and discards a
            # broken one.
            self._pool.putconn(conn)

    def _connect(self) -> Connection:
        try:
            conn = psycopg.connect(self._dsn, **self._kwargs)
        except psycopg.Error as exc:
            raise self._error("connect", exc) from exc
        try:
            _configure(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._error("connect", exc) from exc
        return conn

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError(f"PostgreSQL database {self.location} is closed")
        if os.getpid() != self._pid:
            raise StorageError(
                f"PostgreSQL database {self.location} was opened in process {self._pid}; "
                "open a new PgDatabase in this one"
            )

    def _check_schema(self, component: str, found: int, version: int) -> None:
        if found > version:
            raise PostgresError(
                f"use the {component} schema",
                self.location,
                f"it holds {component} schema version {found}, "
                f"newer than this taskengine's {version}",
            )

    def _error(self, action: str, exc: psycopg.Error) -> PostgresError:
        return driver_error(action, self.location, exc)


def _configure(conn: Connection) -> None:
    """Prepare a new connection: the server's end of its keepalives, and no JIT
    (``_SERVER_SETTINGS``)."""
    conn.execute(_SERVER_SETTINGS)


def _rollback(conn: Connection, depth: int, savepoint: str) -> None:
    try:
        if depth == 0:
            conn.execute("ROLLBACK")
        else:  # one round trip (no parameters: psycopg sends both as one query)
            conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}")
    except psycopg.Error:
        # The connection may be broken (the pool discards it on return); the original
        # error is the one worth reporting.
        pass


def _location(params: dict[str, Any]) -> str:
    """``postgresql://user@host:port/dbname`` from the parts the DSN names (no password)."""
    user = f"{params['user']}@" if params.get("user") else ""
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = f":{params['port']}" if params.get("port") else ""
    dbname = f"/{params['dbname']}" if params.get("dbname") else ""
    return f"postgresql://{user}{host}{port}{dbname}"
