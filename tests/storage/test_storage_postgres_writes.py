"""PgDatabase's nested transactions with savepoints released lazily, on a real server.

A nested level that ends cleanly keeps its savepoint until the next level at its depth
begins (which releases it in the same round trip) or the transaction ends. The law: any
tree of nested blocks, each writing its own row and then ending cleanly, raising an
exception that the level above catches, or raising one that leaves every level, keeps
exactly the rows of the blocks that were not undone — as if every level released its
savepoint at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskengine.storage._pgdatabase import PgDatabase, PostgresError

# A block: (how it ends, its children). Ends: "ok", "caught" (raises; the parent
# catches it), "escape" (raises through every level: only meaningful once per tree).
ENDS = st.sampled_from(["ok", "ok", "caught"])
blocks: st.SearchStrategy[Any] = st.recursive(
    st.tuples(ENDS, st.just(())),
    lambda children: st.tuples(ENDS, st.lists(children, max_size=3).map(tuple)),
    max_leaves=10,
)


class Caught(Exception):
    """Raised by a block that ends ``caught``."""


class Escaped(Exception):
    """Raised by the block that ends ``escape``; leaves every level."""


@pytest.fixture
def db(pg_database: str) -> Iterator[PgDatabase]:
    """A PgDatabase on a fresh database holding a table ``t (k INTEGER PRIMARY KEY)``."""
    with PgDatabase(pg_database, max_size=2) as database:
        with database.transaction() as conn:
            conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        yield database


def _keys(dsn: str) -> list[int]:
    """The committed rows of ``t``, as another session sees them."""
    with psycopg.connect(dsn) as conn:
        return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")]


def _run(db: PgDatabase, block: Any, counter: list[int]) -> list[int]:
    """Run ``block`` as a nested level (its own row, then its children); return the rows
    that survive it (the model). Raises as the block's end says."""
    end, children = block
    key = counter[0] = counter[0] + 1
    kept = [key]
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (%s)", (key,))
        for child in children:
            try:
                kept += _run(db, child, counter)
            except Caught:
                pass
        if end == "caught":
            raise Caught
        if end == "escape":
            raise Escaped
    return kept


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(blocks, min_size=1, max_size=4), st.booleans())
def test_nested_blocks_keep_exactly_what_was_not_undone(
    db: PgDatabase, pg_database: str, tree: list[Any], escape: bool
) -> None:
    """Any tree of nested blocks under one transaction commits the model's rows; an
    escaping exception at the deepest last block keeps nothing."""
    with db.transaction() as conn:
        conn.execute("DELETE FROM t")
    if escape:  # the last top-level block's deepest last descendant escapes
        node = tree[-1]
        path = [node]
        while node[1]:
            node = node[1][-1]
            path.append(node)
        escaping: Any = ("escape", ())
        for parent in reversed(path[:-1]):
            escaping = ("ok", (*parent[1][:-1], escaping))
        tree = [*tree[:-1], escaping]
    counter = [0]
    kept: list[int] = []
    try:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (0)")
            kept.append(0)
            for block in tree:
                try:
                    kept += _run(db, block, counter)
                except Caught:
                    pass
    except Escaped:
        assert escape
        kept = []
    assert _keys(pg_database) == sorted(kept)
    # The thread's state is reset: a new transaction works from a clean slate.
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (-1)")
    assert _keys(pg_database) == sorted([-1, *kept])


def test_failing_sibling_after_clean_siblings_undoes_only_itself(
    db: PgDatabase, pg_database: str
) -> None:
    """Two clean nested blocks (their savepoints not released yet), then one that fails
    and is caught: only the failing one's row goes."""
    with db.transaction() as outer:
        for key in (1, 2):
            with db.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (%s)", (key,))
        with pytest.raises(Caught):
            _run(db, ("caught", ()), [2])
        outer.execute("INSERT INTO t VALUES (4)")
    assert _keys(pg_database) == [1, 2, 4]


def test_failed_statement_after_clean_sibling_is_recoverable(
    db: PgDatabase, pg_database: str
) -> None:
    """A statement error in a nested block that follows a clean one leaves the outer
    transaction usable, and the clean sibling's row stays."""
    with db.transaction() as outer:
        with db.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(PostgresError) as caught, db.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (1)")
        assert caught.value.sqlstate == "23505"
        outer.execute("INSERT INTO t VALUES (2)")
    assert _keys(pg_database) == [1, 2]


def test_many_clean_nested_blocks_keep_one_savepoint_per_depth(db: PgDatabase) -> None:
    """After many clean sibling blocks, releasing the depth's savepoint name once
    leaves none of that name behind: siblings do not pile up savepoints."""

    def siblings_then_release_twice() -> None:
        with db.transaction() as outer:
            for key in range(50):
                with db.transaction() as inner:
                    inner.execute("INSERT INTO t VALUES (%s)", (key,))
            outer.execute("RELEASE SAVEPOINT taskengine_1")
            with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
                outer.execute("RELEASE SAVEPOINT taskengine_1")

    with pytest.raises(PostgresError, match="nothing in it was committed"):
        siblings_then_release_twice()
    with db.transaction() as conn:  # the next transaction starts clean
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
