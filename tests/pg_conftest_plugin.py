"""Pytest fixtures for tests that need PostgreSQL (registered by ``tests/conftest.py``).

* ``postgres_dsn`` (session): the DSN of a database on a running server. With
  ``TASKENGINE_TEST_POSTGRES`` set, that DSN as given; otherwise a throwaway server
  started once per session by :mod:`pg_server` and stopped at its end.
* ``pg_database`` (function): the DSN of a fresh, empty database on the same server,
  created from ``template0`` for the test and dropped after it (open connections are
  closed by force).

Tests that use either fixture are marked ``postgres`` (``pytest -m "not postgres"``
leaves them out). When no server can be provided they skip with a message that says what
to install; with ``TASKENGINE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from pg_server import (
    DSN_VARIABLE,
    REQUIRE_VARIABLE,
    PostgresServer,
    PostgresUnavailable,
    create_database,
    drop_database,
)

if TYPE_CHECKING:
    from taskengine.storage.postgres import PgDatabase, PostgresStorage

_FIXTURES = frozenset({"postgres_dsn", "pg_database"})
_counter = itertools.count()
# Unique across processes and runs sharing one TASKENGINE_TEST_POSTGRES server.
_prefix = f"taskengine_t{os.getpid()}_{uuid.uuid4().hex[:6]}"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``postgres`` marker."""
    config.addinivalue_line("markers", "postgres: needs a PostgreSQL server (postgres_dsn)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL fixture ``postgres``."""
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when ``TASKENGINE_REQUIRE_POSTGRES=1``."""
    if os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0"):
        pytest.fail(
            f"{REQUIRE_VARIABLE} is set and PostgreSQL is unavailable: {reason}", pytrace=False
        )
    pytest.skip(f"PostgreSQL is unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a database on a running PostgreSQL server, for the whole session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[test]'")
    given = os.environ.get(DSN_VARIABLE, "")
    if given:
        yield given
        return
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server.dsn
    finally:
        server.stop()


@contextlib.contextmanager
def scratch_database(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a new, empty database on the server, dropped afterwards (a module may
    share one: emptying it costs about a millisecond, a new one 0.1-0.3 s when busy)."""
    import psycopg

    name = f"{_prefix}_{next(_counter)}"
    try:
        dsn = create_database(postgres_dsn, name)
    except psycopg.Error as exc:
        if not os.environ.get(DSN_VARIABLE):
            raise
        # A given server may refuse CREATE DATABASE to its user (no CREATEDB).
        unavailable(f"cannot create a database with {DSN_VARIABLE}: {exc}")
    try:
        yield dsn
    finally:
        drop_database(postgres_dsn, name)


@pytest.fixture
def pg_database(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    with scratch_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def pg_module_dsn(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a database shared by the module's tests, dropped after them."""
    with scratch_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def pg_module_database(pg_module_dsn: str) -> Iterator[PgDatabase]:
    """A ``PgDatabase`` on :func:`pg_module_dsn` with the storage tables (each test
    empties the collections it uses first: :func:`emptied`)."""
    from taskengine.storage.postgres import PgDatabase, PostgresStorage

    with PgDatabase(pg_module_dsn) as database:
        PostgresStorage(database)
        yield database


def emptied(database: PgDatabase, *names: str) -> PostgresStorage:
    """A storage on ``database`` without the named collections (tests of a module sharing
    a database each use their own, so the order they run in does not matter)."""
    from taskengine.storage.postgres import PostgresStorage

    storage = PostgresStorage(database)
    for name in names:
        if name in {info.name for info in storage.list_collections()}:
            storage.drop_collection(name)
    return storage


def rows_left_to_python(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the rows a PostgreSQL splice (``storage/_pgupdate.py``) leaves to the
    change's Python form, in the order met, from now to the end of the test."""
    from taskengine.storage import _pgupdate

    seen: list[str] = []
    original = _pgupdate.split_outcomes

    def spy(change: Any, items: list[Any]) -> Any:
        seen.extend(item["_id"] for item in items)
        return original(change, items)

    monkeypatch.setattr(_pgupdate, "split_outcomes", spy)
    return seen


def grid_edges(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every answer of ``_pgonepass.grid_edge`` (where a delete window ends by the
    estimate's walk; ``None``: the window reads its keys), from now to the end of the
    patch."""
    from taskengine.storage import _pgonepass

    seen: list[Any] = []
    original = _pgonepass.grid_edge

    def spy(*args: Any) -> Any:
        edge = original(*args)
        seen.append(edge)
        return edge

    monkeypatch.setattr(_pgonepass, "grid_edge", spy)
    return seen
