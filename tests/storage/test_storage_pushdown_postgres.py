"""PostgresStorage with a filter pushed into SQL: scans, counts and finds equal Python's answers.

Against a real server (``postgres_dsn``). Items JSONB cannot hold (a string or key with
U+0000: ``data`` is ``NULL``) are among the documents, and must still be decided exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from unittest import mock

import pytest
import sql_strategies as sq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied

from taskengine.errors import CollectionNotFound, SandboxNotEnabled
from taskengine.filters import Filter, compile_filter
from taskengine.storage import _pgfilter
from taskengine.storage.postgres import PgDatabase, PostgresStorage


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    """One database for the module (emptied per example, which costs about a millisecond)."""
    return pg_module_database


class Counted:
    """A compiled filter that counts its Python calls (and offers the same SQL)."""

    def __init__(self, flt: Filter) -> None:
        self.flt = flt
        self.calls = 0

    def __call__(self, item: Mapping[str, Any]) -> bool:
        self.calls += 1
        return self.flt(item)

    def to_sql(self, backend: str, document: str) -> Any:
        return self.flt.to_sql(backend, document)


def scan_all(
    storage: PostgresStorage, flt: Any, limit: int, after: str | None = None, name: str = "c"
) -> list[dict[str, Any]]:
    """Every page of a filtered scan, checking each page's shape on the way."""
    out: list[dict[str, Any]] = []
    pushed = getattr(flt, "to_sql", lambda *_: None)("postgresql", "data") is not None
    while True:
        page = storage.scan(name, "LIVE", after=after, limit=limit, filter=flt)
        assert len(page.items) <= limit
        if page.cursor is not None and pushed:
            assert len(page.items) == limit, "a pushed-down page fills unless the scan ends"
        if page.cursor is not None:
            assert all(item["_id"] <= page.cursor for item in page.items)
        out.extend(page.items)
        if page.cursor is None:
            return out
        after = page.cursor


_IDS = ["i0", "i1", "i\x00", "i\x01", "i\x01\x00", "j", "\U0001f600", "é", "i00"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(sq.documents, max_size=8),
    st.sampled_from(["mongo", "wix"]),
    st.integers(1, 4),
    st.integers(1, 5),
    st.data(),
)
def test_pushed_down_reads_equal_python(
    shared: PgDatabase,
    docs: list[dict[str, Any]],
    dialect: str,
    limit: int,
    window: int,
    data: st.DataObject,
) -> None:
    """scan (every page, any start, any window size), count and find give Python's answer."""
    docs = [sq.storable(doc) for doc in docs]
    fields = sq.linked(docs)
    # A key no filter names, holding U+0000, makes a row's jsonb NULL without changing
    # what the filter says of it: such rows meet ``where`` and never ``sure``.
    hidden = data.draw(st.lists(st.booleans(), min_size=len(docs), max_size=len(docs)))
    docs = [{**doc, "zz": "\x00"} if nul else doc for doc, nul in zip(docs, hidden, strict=True)]
    specs = sq.mongo_specs(fields=fields) if dialect == "mongo" else sq.wix_specs(fields=fields)
    flt = compile_filter(data.draw(specs, label="spec"), dialect)  # type: ignore[arg-type]
    ids = data.draw(st.permutations(_IDS), label="ids")
    storage = emptied(shared, "c")
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{**doc, "_id": ids[n]} for n, doc in enumerate(docs)])
    everything = list(storage.find("c", "LIVE"))
    expected = [item for item in everything if flt(item)]
    with mock.patch.object(_pgfilter, "WINDOW", window):
        assert scan_all(storage, flt, limit) == expected
        assert storage.count("c", "LIVE", flt).value == len(expected)
        assert list(storage.find("c", "LIVE", flt)) == expected
        if everything:
            starts = [item["_id"] for item in everything] + ["i\ud800", "h", "\U0010ffff"]
            after = data.draw(st.sampled_from(starts), label="after")
            tail = [x for x in expected if x["_id"] > after]
            assert scan_all(storage, flt, limit, after) == tail


@pytest.fixture(scope="module")
def big(shared: PgDatabase) -> PostgresStorage:
    """6,000 items; one in ten has ``n`` below 10, and every 50th holds U+0000 (no jsonb)."""
    storage = emptied(shared, "big")
    storage.create_collection("big")
    storage.insert_items(
        "big",
        "LIVE",
        [
            {
                "_id": f"{i:06d}",
                "n": i % 100,
                "name": ["Alice", "bob", "Émile"][i % 3] if i % 50 else "al\x00",
                "tags": ["x"] if i % 7 == 0 else [],
            }
            for i in range(6000)
        ],
    )
    return storage


@pytest.mark.parametrize(
    ("spec", "dialect"),
    [
        ({"n": {"$lt": 10}}, "mongo"),
        ({"name": {"$startsWith": "AL"}, "n": {"$lt": 30}}, "wix"),  # sure on ASCII names
        ({"name": {"$regex": "b$"}, "n": {"$lt": 30}}, "mongo"),  # Python decides every row
        ({"tags": "x", "n": {"$gte": 95}}, "mongo"),
        ({"name": {"$ne": "bob"}}, "wix"),
    ],
)
def test_pages_and_counts_on_a_larger_collection(
    big: PostgresStorage, spec: dict[str, Any], dialect: str
) -> None:
    """Over many pages and windows, pages fill, cursors continue, and counts are exact."""
    flt = compile_filter(spec, dialect)  # type: ignore[arg-type]
    everything = list(big.find("big", "LIVE"))
    expected = [item for item in everything if flt(item)]
    assert expected
    with mock.patch.object(_pgfilter, "WINDOW", 1000):
        assert big.count("big", "LIVE", flt).value == len(expected)
        assert scan_all(big, flt, 250, name="big") == expected
        assert list(big.find("big", "LIVE", flt)) == expected
    assert scan_all(big, flt, 5000, name="big") == expected  # one window holds them all


def test_rows_decided_in_sql_are_not_checked_in_python(big: PostgresStorage) -> None:
    """Only the 120 rows without jsonb (U+0000 in a name) reach the Python check."""
    for spec, matches in (({"n": {"$lt": 10}}, 600), ({"n": 0}, 60), ({"n": 1}, 60)):
        flt = Counted(compile_filter(spec))
        assert big.count("big", "LIVE", flt).value == matches
        assert flt.calls == 120
        flt = Counted(compile_filter(spec))
        assert len(list(big.find("big", "LIVE", flt))) == matches
        assert flt.calls == 120


def test_nothing_matches_in_a_larger_collection(big: PostgresStorage) -> None:
    """A filter nothing satisfies ends the scan with one empty page and cursor None."""
    flt = compile_filter({"n": {"$gt": 1000}})
    page = big.scan("big", "LIVE", filter=flt)
    assert (page.items, page.cursor) == ([], None)
    assert big.count("big", "LIVE", flt).value == 0


def test_a_plain_callable_filter_is_applied_in_python(big: PostgresStorage) -> None:
    """A filter without to_sql pages as before: limit stored items per page, accepted ones kept."""
    page = big.scan("big", "LIVE", limit=100, filter=lambda item: item["n"] < 10)
    assert [item["n"] for item in page.items] == list(range(10))
    assert page.cursor == "000099"
    assert big.count("big", "LIVE", lambda item: item["n"] == 3).value == 60


def test_errors_are_raised_by_the_call(shared: PgDatabase) -> None:
    """An unknown collection or a missing sandbox raise from scan, count and find at once."""
    flt = compile_filter({"a": 1})
    storage = emptied(shared, "plain")
    storage.create_collection("plain")
    for call in (
        lambda: storage.scan("nope", "LIVE", filter=flt),
        lambda: storage.count("nope", "LIVE", flt),
        lambda: storage.find("nope", "LIVE", flt),
    ):
        with pytest.raises(CollectionNotFound):
            call()
    with pytest.raises(SandboxNotEnabled):
        storage.find("plain", "SANDBOX", flt)


def test_sandbox_and_live_are_kept_apart(shared: PgDatabase) -> None:
    """A pushed-down read sees only its own item set."""
    flt = compile_filter({"v": 1})
    storage = emptied(shared, "s", "d")
    storage.create_collection("s", sandbox=True)
    storage.create_collection("d")
    storage.insert_items("s", "LIVE", [{"_id": "a", "v": 1}])
    storage.insert_items("s", "SANDBOX", [{"_id": "b", "v": 1}, {"_id": "c", "v": 2}])
    storage.insert_items("d", "LIVE", [{"_id": "b", "v": 1}])
    assert [item["_id"] for item in storage.find("s", "SANDBOX", flt)] == ["b"]
    assert storage.count("s", "LIVE", flt).value == 1
    assert storage.count("s", "SANDBOX", flt).value == 1


@pytest.mark.parametrize("window", [2, 3, 8192])
def test_a_candidate_python_rejects_does_not_end_the_scan(shared: PgDatabase, window: int) -> None:
    """Rows without jsonb are candidates Python may reject; the page after them goes on."""
    storage = emptied(shared, "r")
    storage.create_collection("r")
    docs = [
        {"_id": "a", "v": 2, "z": "\x00"},  # a candidate (no jsonb), rejected in Python
        {"_id": "b", "v": 1},
        {"_id": "c", "v": 1, "z": "\x00"},  # a candidate, accepted in Python
        {"_id": "d", "v": 2, "z": "\x00"},
        {"_id": "e", "v": 1},
    ]
    storage.insert_items("r", "LIVE", docs)
    flt = compile_filter({"v": 1})
    with mock.patch.object(_pgfilter, "WINDOW", window):
        for limit in (1, 2, 3):
            assert [item["_id"] for item in scan_all(storage, flt, limit, name="r")] == [
                "b",
                "c",
                "e",
            ]
        assert storage.count("r", "LIVE", flt).value == 3
