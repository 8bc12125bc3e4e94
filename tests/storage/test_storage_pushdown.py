"""SQLiteStorage with a filter pushed into SQL: scans, counts and finds equal Python's answers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

import pytest
import sql_strategies as sq
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.errors import CollectionNotFound, SandboxNotEnabled
from taskengine.filters import Filter, compile_filter
from taskengine.storage import SQLiteStorage, _sqlfilter
from taskengine.storage.base import SQLFilter


def scan_all(
    storage: SQLiteStorage, flt: Any, limit: int, after: str | None = None
) -> list[dict[str, Any]]:
    """Every page of a filtered scan, checking each page's shape on the way."""
    out: list[dict[str, Any]] = []
    pushed = getattr(flt, "to_sql", lambda *_: None)("sqlite", "doc") is not None
    while True:
        page = storage.scan("c", "LIVE", after=after, limit=limit, filter=flt)
        assert len(page.items) <= limit
        if page.cursor is not None and pushed:
            assert len(page.items) == limit, "a pushed-down page fills unless the scan ends"
        if page.cursor is not None:
            assert all(item["_id"] <= page.cursor for item in page.items)
        out.extend(page.items)
        if page.cursor is None:
            return out
        after = page.cursor


def stored(storage: SQLiteStorage) -> list[dict[str, Any]]:
    """Every stored item, unfiltered."""
    return list(storage.find("c", "LIVE"))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(sq.documents, max_size=8),
    st.sampled_from(["mongo", "wix"]),
    st.integers(1, 4),
    st.integers(1, 5),
    st.data(),
)
def test_pushed_down_reads_equal_python(
    docs: list[dict[str, Any]], dialect: str, limit: int, window: int, data: st.DataObject
) -> None:
    """scan (every page, any window size), count and find give exactly what Python gives."""
    docs = [sq.storable(doc) for doc in docs]
    fields = sq.linked(docs)
    specs = sq.mongo_specs(fields=fields) if dialect == "mongo" else sq.wix_specs(fields=fields)
    flt = compile_filter(data.draw(specs, label="spec"), dialect)  # type: ignore[arg-type]
    with SQLiteStorage(":memory:") as storage, mock.patch.object(_sqlfilter, "WINDOW", window):
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)])
        everything = stored(storage)
        expected = [item for item in everything if flt(item)]
        assert scan_all(storage, flt, limit) == expected
        assert storage.count("c", "LIVE", flt).value == len(expected)
        assert list(storage.find("c", "LIVE", flt)) == expected
        if everything:
            after = data.draw(st.sampled_from([item["_id"] for item in everything]), label="after")
            assert scan_all(storage, flt, limit, after) == [x for x in expected if x["_id"] > after]


@pytest.fixture(scope="module")
def big() -> Iterator[SQLiteStorage]:
    """20,000 items over more than two windows; one in ten has ``n`` below 10."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items(
            "c",
            "LIVE",
            [
                {
                    "_id": f"{i:06d}",
                    "n": i % 100,
                    "name": ["Alice", "bob", "Émile"][i % 3],
                    "tags": ["x"] if i % 7 == 0 else [],
                }
                for i in range(20000)
            ],
        )
        yield storage


@pytest.mark.parametrize(
    ("spec", "dialect"),
    [
        ({"n": {"$lt": 10}}, "mongo"),  # exact
        ({"name": {"$startsWith": "AL"}, "n": {"$lt": 30}}, "wix"),  # sure on ASCII names
        ({"name": {"$regex": "b$"}, "n": {"$lt": 30}}, "mongo"),  # Python decides every row
        ({"tags": "x", "n": {"$gte": 95}}, "mongo"),
    ],
)
def test_windows_pages_and_counts_on_a_large_collection(
    big: SQLiteStorage, spec: dict[str, Any], dialect: str
) -> None:
    """Across many windows, pages fill, cursors continue, and counts are exact."""
    flt = compile_filter(spec, dialect)  # type: ignore[arg-type]
    expected = [item for item in big.find("c", "LIVE") if flt(item)]
    assert expected
    assert big.count("c", "LIVE", flt).value == len(expected)
    assert scan_all(big, flt, 1000) == expected
    assert list(big.find("c", "LIVE", flt)) == expected


def test_nothing_matches_in_a_large_collection(big: SQLiteStorage) -> None:
    """A filter nothing satisfies ends the scan with one empty page and cursor None."""
    flt = compile_filter({"n": {"$gt": 1000}})
    page = big.scan("c", "LIVE", filter=flt)
    assert (page.items, page.cursor) == ([], None)
    assert big.count("c", "LIVE", flt).value == 0


def test_a_plain_callable_filter_is_applied_in_python(big: SQLiteStorage) -> None:
    """A filter without to_sql pages as before: limit stored items per page, accepted ones kept."""
    page = big.scan("c", "LIVE", limit=100, filter=lambda item: item["n"] < 10)
    assert [item["n"] for item in page.items] == list(range(10))
    assert page.cursor == "000099"


class _NoSQL:
    """A filter that offers no SQL form for any backend."""

    def __call__(self, item: Mapping[str, Any]) -> bool:
        return bool(item["n"] == 3)

    def to_sql(self, backend: str, document: str) -> None:
        return None


def test_a_filter_declining_sql_is_applied_in_python(big: SQLiteStorage) -> None:
    """to_sql returning None falls back to checking every item in Python."""
    assert isinstance(_NoSQL(), SQLFilter)
    assert big.count("c", "LIVE", _NoSQL()).value == 200


def test_a_compiled_filter_is_a_sql_filter() -> None:
    """taskengine.Filter satisfies the storage protocol's SQLFilter."""
    flt: SQLFilter = compile_filter({"a": 1})
    assert isinstance(flt, SQLFilter)
    assert isinstance(compile_filter({}), Filter)


def test_errors_are_raised_by_the_call() -> None:
    """An unknown collection or a missing sandbox raise from scan, count and find at once."""
    flt = compile_filter({"a": 1})
    with SQLiteStorage(":memory:") as storage:
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


def test_sandbox_and_live_are_kept_apart() -> None:
    """A pushed-down read sees only its own item set."""
    flt = compile_filter({"v": 1})
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c", sandbox=True)
        storage.insert_items("c", "LIVE", [{"_id": "a", "v": 1}])
        storage.insert_items("c", "SANDBOX", [{"_id": "b", "v": 1}, {"_id": "c", "v": 2}])
        assert [item["_id"] for item in storage.find("c", "SANDBOX", flt)] == ["b"]
        assert storage.count("c", "LIVE", flt).value == 1
