"""PostgresStorage.change_matching for rewrites: the text splice equals the scan path.

Against a real server. Each example stores the same documents in two collections and
runs the change batch after batch: ``change_matching`` (one ``UPDATE`` splicing the
codec's text per batch, the rows it cannot decide through Python) on one,
:func:`change_by_scan` on the other. The stored texts must be equal byte for byte, and
the counters too. The documents are built to trip a text splice: nested objects holding
the top-level pair, strings with quotes, backslashes, U+0000 and non-ASCII, numbers
whose jsonb text is not the codec's, dates at other offsets, missing keys.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied, rows_left_to_python

from taskengine.filters import compile_filter
from taskengine.storage import postgres as postgres_module
from taskengine.storage.base import ItemFilter
from taskengine.storage.changes import ChangeResult, ItemChange, change_by_scan
from taskengine.storage.postgres import PgDatabase, PostgresStorage
from taskengine.tasktypes._changes import CopyField, EditField, RemoveFields, SetField
from taskengine.tasktypes._fieldops import Operations

_HAS_STATISTICS = postgres_module._has_statistics


@pytest.fixture(autouse=True)
def set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables are never analyzed: without this, every batch would take the scan path
    (see test_rewrites_are_set_based_only_on_a_table_with_statistics)."""
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    """The module's database (its collections are emptied per example)."""
    return pg_module_database


_UTC = timezone.utc
_DATES = [
    datetime(2030, 1, 1, tzinfo=_UTC),
    datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),  # same instant
    datetime(2030, 1, 1, 0, 0, 0, 500, tzinfo=_UTC),
    datetime(2030, 1, 1),  # naive
]
_STRINGS = ["x", "", 'q"', "b\\", "\x00", "é\U0001f600", "a,b", '{"t":"x"}', "x\n", "\x7f"]
scalars = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 0.0, -0.0, 1.0]),
    st.sampled_from([1e16, 1e-7, 10**16, 2.5]),
    st.sampled_from(_STRINGS),
    st.text(max_size=3),
    st.sampled_from(_DATES),
)
KEYS = ["t", "s", "n", "_publishDate", "x"]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=5,
)


simple = st.sampled_from(["x", "y", "", "é\U0001f600", True, False, None, *_DATES])


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document of the keys the changes touch, often with a spliceable value where a
    change looks (an array of them for appends), sometimes a nested key shadowing a
    top-level one, and sometimes a top-level pair repeated in a nested object (before or
    after it, in an array or not)."""
    doc: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
    for key in draw(st.lists(st.sampled_from(["t", "s", "_publishDate"]), max_size=3)):
        doc[key] = draw(st.one_of(simple, scalars, st.lists(simple, max_size=3)))
    if draw(st.booleans()):  # a nested key shadowing a top-level one, any value
        shadow = {draw(st.sampled_from(["s", "t"])): draw(scalars)}
        doc = {"n": shadow, **{k: v for k, v in doc.items() if k != "n"}}
    if doc and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(doc)))
        nested: Any = {key: doc[key]}
        if draw(st.booleans()):
            nested = [nested]
        where = draw(st.sampled_from(["x", "n", "zz"]))
        if where != key and draw(st.booleans()):
            doc = {where: nested, **{k: v for k, v in doc.items() if k != where}}
        elif where != key:
            doc[where] = nested
    return doc


CHANGES: list[ItemChange] = [
    SetField("t", "x"),
    SetField("t", 'v"\\\x00é'),
    SetField("_publishDate", _DATES[0], needs_ids=True),
    SetField("_publishDate", _DATES[1], needs_ids=True),
    SetField("t", _DATES[3]),
    CopyField("s", "t"),
    CopyField("t", "s"),
    CopyField("t", "t"),
    EditField.of("t", Operations(add_items=("x", 1.0, -0.0))),
    EditField.of("t", Operations(add_items=(_DATES[1],))),
    RemoveFields(("_publishDate", "t"), needs_ids=True),
    RemoveFields(("t", "t")),
    RemoveFields(("s",)),
    RemoveFields(("x", "_publishDate", "t", "s")),
    RemoveFields(('q"',)),  # a key that needs an escape: no splice, the scan path
]
SPECS: list[dict[str, Any] | None] = [
    None,
    {},
    {"n": {"$exists": True}},
    {"t": "x"},
    {"n": {"$gt": 0}},
    {"$or": [{"s": {"$type": "string"}}, {"t": None}]},
]


def stored(storage: PostgresStorage, name: str) -> list[tuple[str, str]]:
    """``(id, doc)`` of the collection's rows, as stored."""
    with storage.database.read() as conn:
        rows = conn.execute(
            "SELECT i.id, i.doc FROM taskengine_items AS i JOIN taskengine_collections AS c"
            " ON c.id = i.coll WHERE c.name = %s ORDER BY i.id",
            (name,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def run(
    storage: PostgresStorage,
    name: str,
    limit: int,
    flt: ItemFilter | None,
    change: ItemChange,
    *,
    reference: bool,
    until: str | None = None,
) -> tuple[int, int, list[tuple[str, str]], list[str]]:
    """Every batch from the start: (written, unchanged, refused, ids done)."""
    after: str | None = None
    written = unchanged = 0
    refused: list[tuple[str, str]] = []
    done: list[str] = []
    for _ in range(100):
        with storage.atomic():
            if reference:
                result: ChangeResult = change_by_scan(
                    storage,
                    name,
                    "LIVE",
                    after=after,
                    limit=limit,
                    filter=flt,
                    change=change,
                    until=until,
                )
            else:
                result = storage.change_matching(
                    name,
                    "LIVE",
                    after=after,
                    limit=limit,
                    filter=flt,
                    change=change,
                    until=until,
                )
        assert result.missing == ()
        written += result.written
        unchanged += result.unchanged
        refused += result.refused
        done += result.done
        if result.cursor is None:
            return written, unchanged, sorted(refused), sorted(done)
        assert after is None or result.cursor > after
        after = result.cursor
    raise AssertionError("the batches did not reach the end")


@pytest.mark.parametrize("change", CHANGES, ids=repr)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# The traps, every run: a nested key before the top-level one (another value, the same
# value), in front of every change.
@example([{"n": {"s": 5, "t": "y"}, "s": 7, "t": "x"}, {"n": {"t": "x"}, "t": "x"}], None, 3, None)
@example([{"x": [{"s": True}], "s": True, "t": _DATES[0], "n": {"t": _DATES[0]}}], {}, 1, None)
@given(
    st.lists(documents(), max_size=8),
    st.sampled_from(SPECS),
    st.integers(1, 4),
    st.sampled_from([None, "i3", "i9"]),
)
def test_the_splice_equals_the_scan_path(
    shared: PgDatabase,
    change: ItemChange,
    docs: list[dict[str, Any]],
    spec: dict[str, Any] | None,
    limit: int,
    until: str | None,
) -> None:
    """Stored texts and counters equal ``change_by_scan``'s on an identical copy."""
    storage = emptied(shared, "a", "b")
    items = [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)]
    for name in ("a", "b"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", items)
    flt = None if spec is None else compile_filter(spec)
    got = run(storage, "a", limit, flt, change, reference=False, until=until)
    expected = run(storage, "b", limit, flt, change, reference=True, until=until)
    assert got[:3] == expected[:3]
    if change.needs_ids:
        assert got[3] == expected[3]
    assert stored(storage, "a") == stored(storage, "b")


@pytest.mark.parametrize(
    ("change", "docs", "in_python"),
    [
        # Spliced: a plain string, a date, a missing key, a bool.
        (SetField("t", "y"), [{"t": "x"}, {"t": True}, {}, {"t": _DATES[0]}], []),
        (CopyField("s", "t"), [{"s": "x"}, {"s": _DATES[1], "t": None}, {"t": 1}], []),
        # Undecided: a nested copy of the pair, an escape, a number, no jsonb (U+0000).
        (
            SetField("t", "y"),
            [{"n": {"t": "x"}, "t": "x"}, {"t": 'q"'}, {"t": 1.0}, {"t": "x", "z": "\x00"}],
            ["i0", "i1", "i2", "i3"],
        ),
        (CopyField("s", "t"), [{"s": 10**16}, {"s": 1e16}, {"s": -0.0, "t": "x"}], []),
        (
            CopyField("s", "t"),
            [{"s": "a\\b"}, {"s": "x", "t": [1]}, {"n": {"s": 1}, "s": 1}, {"s": 1, "t": 1}],
            ["i0", "i1", "i2", "i3"],
        ),
        # Appended: a missing key, null, arrays of derivable texts (strings, true, null,
        # dates); not: a number or an escaped string in the array, not an array, the
        # same array nested too.
        (
            EditField.of("t", Operations(add_items=("a",))),
            [{}, {"t": None}, {"t": []}, {"t": ["b", True, None, _DATES[1]]}],
            [],
        ),
        (
            EditField.of("t", Operations(add_items=("a",))),
            [
                {"t": [1]},
                {"t": ["a\\b"]},
                {"t": "x"},
                {"n": {"t": ["b"]}, "t": ["b"]},
                # Without its number the array's text would be the nested one's.
                {"n": {"t": ["b"]}, "t": [1, "b"]},
            ],
            ["i0", "i1", "i2", "i3", "i4"],
        ),
        (
            RemoveFields(("t", "s")),
            [{"t": "x"}, {"s": True, "t": _DATES[1]}, {"a": 1, "t": None, "b": 2}, {"a": 1}],
            [],
        ),
        (
            RemoveFields(("t", "s")),
            [{"t": 1}, {"t": "x", "n": [{"t": "x"}]}, {"s": None, "t": {"a": 1}}],
            ["i0", "i1", "i2"],
        ),
    ],
)
def test_which_rows_go_through_python(
    shared: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    change: ItemChange,
    docs: list[dict[str, Any]],
    in_python: list[str],
) -> None:
    """The splice writes the rows it can prove exact and hands the others to Python, with
    the scan path's result either way."""
    storage = emptied(shared, "a", "b")
    items = [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)]
    for name in ("a", "b"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", items)
    seen = rows_left_to_python(monkeypatch)
    got = run(storage, "a", 10, None, change, reference=False)
    assert seen == in_python
    assert got[:3] == run(storage, "b", 10, None, change, reference=True)[:3]
    assert stored(storage, "a") == stored(storage, "b")


def test_two_transactions_on_the_same_rows(shared: PgDatabase) -> None:
    """A batch waits for another transaction's locks on its rows and works from the rows
    as that one left them: a copy after the source was set elsewhere copies the new
    value (a new text computed from the rows as first read would copy the old one, and
    the rows' new versions are not in the waiting statement's snapshot), and a copy
    after the same copy finds the values copied (unchanged)."""
    storage = emptied(shared, "a")
    storage.create_collection("a")
    storage.insert_items("a", "LIVE", [{"_id": f"i{n}", "s": f"v{n}"} for n in range(5)])
    results: list[ChangeResult] = []
    scenarios = [
        (SetField("s", "w"), CopyField("s", "t"), (5, 0), ("w", "w", None)),
        (CopyField("s", "u"), CopyField("s", "u"), (0, 5), ("w", "w", "w")),
    ]
    for first_change, later_change, expected, values in scenarios:
        results.clear()

        def later(change: ItemChange = later_change) -> None:  # its own connection
            with storage.atomic():
                results.append(
                    storage.change_matching(
                        "a", "LIVE", after=None, limit=10, filter=None, change=change
                    )
                )

        thread = threading.Thread(target=later)
        with storage.atomic():
            first = storage.change_matching(
                "a", "LIVE", after=None, limit=10, filter=None, change=first_change
            )
            assert first.written == 5
            thread.start()
            deadline = time.monotonic() + 30
            with storage.database.read() as conn:  # this transaction's connection
                while not conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"  # (not a snapshot)
                ).fetchone()[0]:
                    assert time.monotonic() < deadline, "the later batch never waited"
                    assert not results, "the later batch did not wait for the locks"
                    time.sleep(0.01)
        thread.join(30)
        assert not thread.is_alive()
        assert (results[0].written, results[0].unchanged) == expected
        found = [(item["s"], item["t"], item.get("u")) for item in storage.find("a", "LIVE")]
        assert found == [values] * 5


def test_rewrites_are_set_based_only_on_a_table_with_statistics(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without statistics (a table filled a moment ago) the splice's plan costs more than
    the scan path (30k items, publish status: 2.02 s against 0.52 s), so a rewrite takes
    the scan path; once the table is analyzed, the splice."""
    calls: list[int] = []
    real = postgres_module.update_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(postgres_module, "update_rows", counted)
    monkeypatch.setattr(postgres_module, "_has_statistics", _HAS_STATISTICS)
    change = SetField("s", "DRAFT")
    with PgDatabase(pg_database) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"{k:04d}", "s": "x"} for k in range(1000)])
        with storage.atomic():
            first = storage.change_matching(
                "c", "LIVE", after=None, limit=100, filter=None, change=change
            )
        assert calls == []
        with database.transaction() as conn:
            conn.execute("ANALYZE taskengine_items")
        with storage.atomic():
            second = storage.change_matching(
                "c", "LIVE", after=first.cursor, limit=100, filter=None, change=change
            )
        assert calls == [1]
        assert (first.written, second.written) == (100, 100)
        assert storage.count("c", "LIVE", compile_filter({"s": "DRAFT"})).value == 200
