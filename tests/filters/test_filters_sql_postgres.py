"""Filters translated for PostgreSQL: the SQL text, and its honesty on a real server.

The server tests use a table laid out as ``PostgresStorage`` keeps items: the exact JSON
text in ``doc`` and a ``jsonb`` copy generated from it, ``NULL`` where JSONB cannot
hold the item (a string with ``U+0000``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
import sql_strategies as sq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_filters_sql import TRICKY, linked_spec

from taskengine.filters import Filter, compile_filter
from taskengine.filters._sql import SQLCondition
from taskengine.storage.codec import admit_text, decode

if TYPE_CHECKING:
    import psycopg

# ------------------------------------------------------------------------ SQL text


def sql_of(spec: dict[str, Any], dialect: str = "mongo") -> SQLCondition:
    """The PostgreSQL condition of a spec over the ``data`` column."""
    condition = compile_filter(spec, dialect).to_sql("postgresql", "data")  # type: ignore[arg-type]
    assert condition is not None
    return condition


def test_number_comparison_reads_jsonb_as_numeric() -> None:
    """{a: {$gt: 5}}: elements of an array or the value itself, as numeric, rows without
    jsonb unsure."""
    condition = sql_of({"a": {"$gt": 5}})
    assert condition.where == (
        "(data IS NULL OR CASE WHEN jsonb_typeof((data -> 'a')) = 'array' THEN EXISTS (SELECT 1"
        " FROM jsonb_array_elements((data -> 'a')) AS e1(value) WHERE CASE WHEN"
        " jsonb_typeof(e1.value) = 'number' THEN (e1.value)::numeric > CAST(%s AS numeric)"
        " ELSE FALSE END) ELSE CASE WHEN COALESCE(jsonb_typeof((data -> 'a')), '') = 'number'"
        " THEN ((data -> 'a'))::numeric > CAST(%s AS numeric) ELSE FALSE END END)"
    )
    assert condition.where_params == ("5", "5")
    assert condition.sure.startswith("((NOT data IS NULL) AND CASE WHEN")
    assert not condition.exact


@pytest.mark.parametrize(
    ("spec", "dialect", "params"),
    [
        ({"a": 5}, "mongo", ("5",)),
        ({"a": {"$in": ["x", True, -0.0]}}, "mongo", ('"x"', "true", "-0.0")),
        ({"a": {"$eq": "é"}}, "wix", ('"é"',)),
        ({"a": {"$hasSome": [1.5, "y"]}}, "wix", ("1.5", '"y"')),
        ({"a": {"$hasAll": [1, 2]}}, "wix", ("1", "2")),
    ],
)
def test_scalar_equality_is_jsonb_containment(
    spec: dict[str, Any], dialect: str, params: tuple[str, ...]
) -> None:
    """Equality with scalars is one `@>` per value (the field or an element of it)."""
    condition = sql_of(spec, dialect)
    assert "jsonb_array_elements" not in condition.where
    assert condition.where.count("@> CAST(%s AS jsonb)") == len(params)
    assert condition.where_params == params


@pytest.mark.parametrize(
    "spec",
    [
        {"a": 2**53},  # beyond exact numerics
        {"a": "x\x00"},  # no JSONB string holds U+0000
        {"a": {"$in": [str(i) for i in range(9)]}},  # a long list: hashed per element
        {"a": {"$in": ["x", None]}},  # null also means missing: not containment alone
    ],
)
def test_containment_only_where_it_is_the_value_models_equality(spec: dict[str, Any]) -> None:
    """Operands containment cannot decide alone keep the per-element form."""
    condition = sql_of(spec, "wix")
    assert "jsonb_array_elements" in condition.where or "jsonb_typeof" in condition.where


def test_strings_compare_by_code_point_and_keys_are_escaped() -> None:
    """Strings use COLLATE "C"; a key's quote is doubled and its % escaped for psycopg."""
    condition = sql_of({"it's 100%": {"$lt": "b"}}, "wix")
    assert "(data -> 'it''s 100%%')" in condition.where
    assert """ #>> '{}') COLLATE "C" < %s""" in condition.where


def test_case_folding_is_ascii_only_and_c_collated() -> None:
    """$startsWith folds with lower(... COLLATE "C") and is sure on ASCII strings only."""
    condition = sql_of({"a": {"$startsWith": "Al"}}, "wix")
    assert "lower(((data -> 'a') #>> '{}') COLLATE \"C\")" in condition.sure
    assert "octet_length(" in condition.sure
    assert "al" in condition.sure_params


def test_jsonb_cannot_tell_integers_from_reals() -> None:
    """$type int is a necessary condition only; an operand beyond 2**53 keeps just the type."""
    condition = sql_of({"a": {"$type": "int"}})
    assert condition.sure == "FALSE"
    far = sql_of({"a": {"$gt": 2**60}})
    assert "numeric" not in far.where
    assert far.sure == "FALSE"


def test_constant_filters_need_no_guard() -> None:
    """{} and a filter matching nothing are exact without the NULL-jsonb guard."""
    assert sql_of({}).exact
    assert sql_of({"a": {"$in": []}}).where == "FALSE"


# -------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def pg(postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection with a private table shaped like PostgresStorage's items."""
    import psycopg

    table = f"pushdown_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{table}" (id TEXT COLLATE "C" PRIMARY KEY, doc TEXT NOT NULL,'
            " data JSONB GENERATED ALWAYS AS"
            " (CASE WHEN strpos(doc, E'\\\\u0000') = 0 THEN doc::jsonb END) STORED)"
        )
        conn.table = table  # type: ignore[attr-defined]
        try:
            yield conn
        finally:
            conn.execute(f'DROP TABLE "{table}" CASCADE')


def check_pg(conn: psycopg.Connection[Any], flt: Filter, docs: list[dict[str, Any]]) -> None:
    """Store ``docs``, evaluate both conditions on the server and compare with Python."""
    table = conn.table  # type: ignore[attr-defined]
    condition = flt.to_sql("postgresql", "data")
    if condition is None:
        return
    conn.execute(f'DELETE FROM "{table}"')
    rows = [admit_text({**sq.storable(doc), "_id": str(i)}) for i, doc in enumerate(docs)]
    with conn.cursor() as cur:
        cur.executemany(f'INSERT INTO "{table}" (id, doc) VALUES (%s, %s)', rows)
        cur.execute(
            f'SELECT doc, ({condition.where}), ({condition.sure}) FROM "{table}" ORDER BY id',
            (*condition.where_params, *condition.sure_params),
        )
        for text, where, sure in cur.fetchall():
            accepted = flt(decode(text))
            assert where is not None, text
            assert sure is not None, text
            assert where or not accepted, f"where dropped an accepted item: {text}"
            assert accepted or not sure, f"sure accepted a rejected item: {text}"
            if condition.exact:
                assert where is accepted, f"exact but wrong on {text}"


_PG = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PG
@given(st.lists(sq.documents, max_size=6), st.sampled_from(["mongo", "wix"]), st.data())
def test_postgres_bounds_are_honest(
    pg: psycopg.Connection[Any], docs: list[dict[str, Any]], dialect: str, data: st.DataObject
) -> None:
    """On a real server, where is necessary and sure sufficient, in both dialects."""
    check_pg(pg, linked_spec(data, dialect, docs), docs)


@pytest.mark.parametrize(("spec", "dialect", "docs"), TRICKY)
def test_postgres_tricky_shapes_are_honest(
    pg: psycopg.Connection[Any], spec: dict[str, Any], dialect: str, docs: list[dict[str, Any]]
) -> None:
    """The tricky shapes of the SQLite tests agree on PostgreSQL too."""
    check_pg(pg, compile_filter(spec, dialect), docs)  # type: ignore[arg-type]


def test_postgres_decides_dates_and_numbers_in_sql(pg: psycopg.Connection[Any]) -> None:
    """UTC dates and numbers below 2**53 are decided by the server alone (sure = where)."""
    table = pg.table  # type: ignore[attr-defined]
    flt = compile_filter({"d": {"$gte": datetime(2020, 1, 1)}, "n": {"$lt": 2.5}})
    condition = flt.to_sql("postgresql", "data")
    assert condition is not None
    docs = [
        {"d": datetime(2020, 1, 1, tzinfo=timezone.utc), "n": 2},
        {"d": datetime(2019, 12, 31, 23, 59), "n": 1},
        {"d": datetime(2020, 6, 1), "n": 2.5},
    ]
    pg.execute(f'DELETE FROM "{table}"')
    with pg.cursor() as cur:
        cur.executemany(
            f'INSERT INTO "{table}" (id, doc) VALUES (%s, %s)',
            [admit_text({**doc, "_id": str(i)}) for i, doc in enumerate(docs)],
        )
        cur.execute(
            f'SELECT ({condition.where}), ({condition.sure}) FROM "{table}" ORDER BY id',
            (*condition.where_params, *condition.sure_params),
        )
        assert cur.fetchall() == [(True, True), (False, False), (False, False)]


_EQUALITY_OPS = {
    "mongo": ["$eq", "$ne", "$in", "$nin"],
    "wix": ["$eq", "$ne", "$in", "$nin", "$hasSome", "$hasAll"],
}
_SCALARS = st.one_of(st.booleans(), sq.ints, sq.reals, sq.texts)


@_PG
@given(
    st.lists(sq.documents, max_size=6),
    st.sampled_from(["mongo", "wix"]),
    st.data(),
)
def test_postgres_scalar_equality_by_containment_is_exact(
    pg: psycopg.Connection[Any], docs: list[dict[str, Any]], dialect: str, data: st.DataObject
) -> None:
    """Equality with scalars (the `@>` form): exact on every row JSONB holds, against the
    Python evaluator, over scalars, arrays, nested arrays and objects at the edges."""
    op = data.draw(st.sampled_from(_EQUALITY_OPS[dialect]), label="op")
    pool = sq.linked([sq.storable(doc) for doc in docs]).flatmap(
        lambda field: st.tuples(
            st.just(field[0]),
            st.one_of(st.sampled_from(field[1] or [0]), _SCALARS).filter(
                lambda v: v.__class__ in (str, int, float, bool)
            )
            | _SCALARS,
        )
    )
    path, first = data.draw(pool, label="field")
    more = data.draw(st.lists(_SCALARS, max_size=3), label="more")
    operand: Any = first if op in ("$eq", "$ne") else [first, *more]
    flt = compile_filter({path: {op: operand}}, dialect)  # type: ignore[arg-type]
    check_pg(pg, flt, docs)
