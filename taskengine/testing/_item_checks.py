"""Conformance checks: stored values round-trip exactly; inserts, replaces, deletes, finds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from taskengine.errors import CollectionNotFound, DuplicateItem, InvalidItem
from taskengine.storage.base import Storage, WriteResult
from taskengine.testing._checks import (
    PLUS_0530,
    ConformanceError,
    all_items,
    expect,
    expect_raises,
    get_item,
    ids_of,
    register,
    same_value,
)

# -- values ------------------------------------------------------------------------------


def _values_item() -> dict[str, Any]:
    return {
        "_id": "values",
        "str": 'héllo ☃ \U0001f600 tab\t nul\x00 quote" backslash\\',
        "empty": "",
        "int": 42,
        "neg": -7,
        "zero": 0,
        "max64": 2**63 - 1,
        "min64": -(2**63),
        "float": 0.1,
        "whole_float": 3.0,
        "negzero": -0.0,
        "big": 1.7976931348623157e308,
        "tiny": 5e-324,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "a", None, [2, [3.5]], {"k": "v"}, []],
        "dict": {"z": 1, "a": {"nested": [True, {}]}, "m": None},
        "$weird key.with dots": "kept",
        "naive": datetime(2024, 2, 29, 12, 30, 45, 123456),
        "utc": datetime(2024, 1, 1, tzinfo=timezone.utc),
        "offset": datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=PLUS_0530),
        "dates": [datetime(1970, 1, 1), {"when": datetime(2030, 6, 1, 8, tzinfo=timezone.utc)}],
        "almost_date": {"$date": "2024-01-01", "other": 1},
    }


@register
def check_round_trip(storage: Storage) -> None:
    """Every value type comes back exactly (types, key order, -0.0, dates) via every read."""
    storage.create_collection("c")
    original = _values_item()
    storage.insert_items("c", "LIVE", [original])
    expected = _values_item()
    reads = {
        "get_item": get_item(storage, "c", "values"),
        "scan": storage.scan("c", "LIVE").items[0],
        "find": next(iter(storage.find("c", "LIVE"))),
    }
    for how, got in reads.items():
        expect(isinstance(got, dict), f"{how} must return a dict, got {type(got).__name__}")
        for key, value in expected.items():
            expect(key in got, f"{how} lost the field {key!r}")
            expect(
                same_value(got[key], value),
                f"{how}: field {key!r} did not round-trip: stored {value!r}, got {got[key]!r}",
            )
        expect(list(got) == list(expected), f"{how} changed the key order: {list(got)}")
    changed = dict(expected, int=43, added=[datetime(2001, 1, 1)])
    storage.replace_items("c", "LIVE", [changed])
    got = get_item(storage, "c", "values")
    expect(same_value(got, changed), f"replace_items did not round-trip: {got!r}")


@register
def check_date_form(storage: Storage) -> None:
    """{"$date": ISO} is stored as a date and read back as a datetime (Z means UTC)."""
    storage.create_collection("c")
    storage.insert_items(
        "c",
        "LIVE",
        [
            {
                "_id": "d",
                "z": {"$date": "2024-03-01T10:00:00Z"},
                "offset": {"$date": "2024-03-01T10:00:00.250000+02:00"},
                "naive": {"$date": "2024-03-01T10:00:00"},
                "nested": [{"$date": "2024-03-01T10:00:00+00:00"}],
            }
        ],
    )
    got = get_item(storage, "c", "d")
    utc = datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
    offset = datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    expect(same_value(got["z"], utc), f"'Z' date came back as {got['z']!r}")
    expect(same_value(got["offset"], offset), f"offset date came back as {got['offset']!r}")
    expect(
        same_value(got["naive"], datetime(2024, 3, 1, 10)),
        f"naive date came back as {got['naive']!r}",
    )
    expect(same_value(got["nested"], [utc]), f"nested date came back as {got['nested']!r}")


_BAD_ITEMS: list[tuple[str, Any]] = [
    ("no _id", {"v": 1}),
    ("int _id", {"_id": 1}),
    ("None _id", {"_id": None}),
    ("empty _id", {"_id": ""}),
    ("lone surrogate _id", {"_id": "\ud800"}),
    ("not a dict", ["_id", "x"]),
    ("NaN", {"_id": "bad", "v": float("nan")}),
    ("infinity", {"_id": "bad", "v": [float("-inf")]}),
    ("int above 64 bits", {"_id": "bad", "v": 2**63}),
    ("int below 64 bits", {"_id": "bad", "v": {"deep": -(2**63) - 1}}),
    ("tuple", {"_id": "bad", "v": (1, 2)}),
    ("set", {"_id": "bad", "v": {1}}),
    ("bytes", {"_id": "bad", "v": b"x"}),
    ("non-str key", {"_id": "bad", "v": {1: "x"}}),
    ("object", {"_id": "bad", "v": object()}),
    ("lone surrogate", {"_id": "bad", "v": "a\udc00"}),
    ("bad $date", {"_id": "bad", "v": {"$date": "not a date"}}),
]


@register
def check_invalid_items(storage: Storage) -> None:
    """Items that cannot be stored raise InvalidItem on insert and replace; nothing changes."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": "bad", "v": "kept"}, {"_id": "keep", "v": 1}])
    before = all_items(storage, "c")
    for what, item in _BAD_ITEMS:
        expect_raises(
            InvalidItem,
            f"insert_items with an item with {what}",
            lambda i=item: storage.insert_items("c", "LIVE", [{"_id": "new1"}, i]),  # type: ignore[misc]
        )
        expect_raises(
            InvalidItem,
            f"replace_items with an item with {what}",
            lambda i=item: storage.replace_items("c", "LIVE", [{"_id": "keep", "v": 2}, i]),  # type: ignore[misc]
        )
        after = all_items(storage, "c")
        expect(after == before, f"a rejected item with {what} changed the store: {after}")
    for bad_id in (1, None, ["x"]):
        expect_raises(
            InvalidItem,
            f"delete_items with id {bad_id!r}",
            lambda b=bad_id: storage.delete_items("c", "LIVE", ["keep", b]),  # type: ignore[misc]
        )
        expect_raises(
            InvalidItem,
            f"get_item with id {bad_id!r}",
            lambda b=bad_id: storage.get_item("c", "LIVE", b),  # type: ignore[misc]
        )
    expect(all_items(storage, "c") == before, "a rejected delete changed the store")


@register
def check_copies(storage: Storage) -> None:
    """Items in and out are copies: mutating them never changes the store."""
    storage.create_collection("c")
    item: dict[str, Any] = {"_id": "a", "list": [1, {"x": 1}], "dict": {"y": [2]}}
    storage.insert_items("c", "LIVE", [item])
    item["list"][1]["x"] = "changed"
    item["dict"]["y"].append(3)
    item["new"] = True
    expected = {"_id": "a", "list": [1, {"x": 1}], "dict": {"y": [2]}}
    expect(get_item(storage, "c", "a") == expected, "mutating an inserted dict changed the store")
    reads: dict[str, Callable[[], Any]] = {
        "get_item": lambda: get_item(storage, "c", "a"),
        "scan": lambda: storage.scan("c", "LIVE").items[0],
        "find": lambda: next(iter(storage.find("c", "LIVE"))),
    }
    for how, read in reads.items():
        got = read()
        got["list"][1]["x"] = "changed"
        got["list"].append("more")
        got["dict"]["y"].clear()
        got["dict"]["z"] = 1
        got["new"] = True
        expect(
            get_item(storage, "c", "a") == expected,
            f"mutating an item returned by {how} changed the store",
        )
        expect(read() is not read(), f"{how} returned the same object twice")
    replacement: dict[str, Any] = {"_id": "a", "nested": {"k": [1]}}
    storage.replace_items("c", "LIVE", [replacement])
    replacement["nested"]["k"].append(2)
    expect(
        get_item(storage, "c", "a") == {"_id": "a", "nested": {"k": [1]}},
        "mutating a replacement dict after replace_items changed the store",
    )


# -- writes ------------------------------------------------------------------------------


@register
def check_insert(storage: Storage) -> None:
    """insert_items returns the count, accepts any iterable and is all or nothing."""
    storage.create_collection("c")
    expect(storage.insert_items("c", "LIVE", []) == 0, "inserting nothing must return 0")
    inserted = storage.insert_items("c", "LIVE", ({"_id": f"g{n}"} for n in range(3)))
    expect(inserted == 3, f"insert_items of a generator of 3 returned {inserted}")
    storage.insert_items("c", "LIVE", [{"_id": "a", "v": 1}])
    expect_raises(
        DuplicateItem,
        "inserting an _id that is stored",
        lambda: storage.insert_items("c", "LIVE", [{"_id": "n1"}, {"_id": "a", "v": 2}]),
    )
    expect_raises(
        DuplicateItem,
        "inserting the same _id twice in one batch",
        lambda: storage.insert_items("c", "LIVE", [{"_id": "n2"}, {"_id": "n2"}]),
    )
    ids = ids_of(all_items(storage, "c"))
    expect(ids == ["a", "g0", "g1", "g2"], f"a failed insert left items behind: {ids}")
    expect(get_item(storage, "c", "a") == {"_id": "a", "v": 1}, "a failed insert changed 'a'")
    expect(get_item(storage, "c", "n1") is None, "get_item of an id never stored must be None")


def _duplicate_named(storage: Storage, batch: list[dict[str, Any]], what: str) -> str:
    """The ``item_id`` of the DuplicateItem that inserting ``batch`` raises."""
    try:
        storage.insert_items("c", "LIVE", batch)
    except DuplicateItem as exc:
        expect(exc.collection == "c", f"{what}: DuplicateItem names collection {exc.collection!r}")
        return str(exc.item_id)
    except Exception as exc:
        raise ConformanceError(
            f"{what}: expected DuplicateItem, got {type(exc).__name__}: {exc}"
        ) from exc
    raise ConformanceError(f"{what}: expected DuplicateItem, nothing was raised")


@register
def check_insert_duplicate(storage: Storage) -> None:
    """DuplicateItem names the real offending _id (stored or repeated); the store is unchanged."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"s{n}", "v": n} for n in range(5)])
    before = all_items(storage, "c")
    cases = [
        # (batch ids, the ids DuplicateItem may name)
        (["n0", "n1", "n2", "s3", "n4"], {"s3"}),
        (["s4"], {"s4"}),
        (["n0", "s0"], {"s0"}),
        ([f"m{n}" for n in range(1200)] + ["s2"], {"s2"}),
        (["n0", "n1", "n2", "n1", "n3"], {"n1"}),
        (["n0", "n0"], {"n0"}),
        (["n0", "s1", "n0"], {"s1", "n0"}),
    ]
    for ids, allowed in cases:
        what = f"inserting {ids[:6]}{'...' if len(ids) > 6 else ''}"
        named = _duplicate_named(storage, [{"_id": i, "new": True} for i in ids], what)
        expect(named in allowed, f"{what}: DuplicateItem named {named!r}, expected one of "
                f"{sorted(allowed)} (an id of the batch that is stored or repeated)")  # fmt: skip
        after = all_items(storage, "c")
        expect(
            same_value(after, before),
            f"{what}: the failed insert changed the store: {ids_of(after)[:8]} ...",
        )
        for item_id in ids:
            expect(
                item_id.startswith("s") or get_item(storage, "c", item_id) is None,
                f"{what}: the failed insert left {item_id!r} behind",
            )


@register
def check_replace(storage: Storage) -> None:
    """replace_items overwrites whole items, reports missing ids, never inserts them."""
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "LIVE", [{"_id": "a", "old": 1}, {"_id": "b", "old": 2}])
    storage.insert_items("c", "SANDBOX", [{"_id": "a", "sandbox": True}])
    result = storage.replace_items("c", "LIVE", [{"_id": "a", "new": 1}, {"_id": "zz", "new": 2}])
    expect(isinstance(result, WriteResult), f"replace_items must return a WriteResult: {result!r}")
    expect(
        tuple(result.done) == ("a",) and tuple(result.missing) == ("zz",),
        f"replace_items reported {result!r}, expected done=('a',), missing=('zz',)",
    )
    expect(get_item(storage, "c", "a") == {"_id": "a", "new": 1}, "replace must overwrite the item")
    expect(get_item(storage, "c", "zz") is None, "replace_items must not insert a missing id")
    expect(
        get_item(storage, "c", "a", "SANDBOX") == {"_id": "a", "sandbox": True},
        "replacing in LIVE changed SANDBOX",
    )
    result = storage.replace_items("c", "LIVE", [{"_id": "b", "v": 1}, {"_id": "b", "v": 2}])
    expect(
        tuple(result.done) == ("b",) and tuple(result.missing) == (),
        f"a repeated id must be reported once, got {result!r}",
    )
    expect(get_item(storage, "c", "b") == {"_id": "b", "v": 2}, "the last repeated item must win")
    batch = [{"_id": "a", "n": n} for n in range(3)] + [{"_id": "b", "n": 9}]
    storage.replace_items("c", "LIVE", batch)
    expect(
        all_items(storage, "c") == [{"_id": "a", "n": 2}, {"_id": "b", "n": 9}],
        f"every item of a batch must be written, got {all_items(storage, 'c')}",
    )
    empty = storage.replace_items("c", "LIVE", [])
    expect(tuple(empty.done) == () and tuple(empty.missing) == (), "empty batch must be a no-op")


@register
def check_delete(storage: Storage) -> None:
    """delete_items removes ids, reports missing ones, each id once."""
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "LIVE", [{"_id": i} for i in ("a", "b", "c", "d")])
    storage.insert_items("c", "SANDBOX", [{"_id": "a"}])
    result = storage.delete_items("c", "LIVE", ["a", "zz", "a", "c", ""])
    expect(isinstance(result, WriteResult), f"delete_items must return a WriteResult: {result!r}")
    expect(
        tuple(result.done) == ("a", "c") and tuple(result.missing) == ("zz", ""),
        f"delete_items reported {result!r}, expected done=('a', 'c'), missing=('zz', '')",
    )
    expect(ids_of(all_items(storage, "c")) == ["b", "d"], "delete_items left the wrong items")
    expect(ids_of(all_items(storage, "c", "SANDBOX")) == ["a"], "deleting in LIVE changed SANDBOX")
    again = storage.delete_items("c", "LIVE", ["a"])
    expect(
        tuple(again.done) == () and tuple(again.missing) == ("a",),
        f"deleting a deleted id must report it missing, got {again!r}",
    )
    storage.insert_items("c", "LIVE", [{"_id": "a", "back": True}])
    expect(get_item(storage, "c", "a") == {"_id": "a", "back": True}, "a deleted id can be reused")


@register
def check_find(storage: Storage) -> None:
    """find raises collection errors at the call, then yields accepted items in _id order."""
    storage.create_collection("c")
    expect_raises(CollectionNotFound, "find on an unknown collection (before next())",
            lambda: storage.find("nope", "LIVE"))  # fmt: skip
    storage.insert_items("c", "LIVE", [{"_id": f"{n:04d}", "n": n} for n in range(2500, 0, -1)])
    found = list(storage.find("c", "LIVE"))
    expect(len(found) == 2500, f"find must yield every item, got {len(found)}")
    expect(ids_of(found) == sorted(ids_of(found)), "find must yield items in _id order")
    odd = list(storage.find("c", "LIVE", lambda doc: doc["n"] % 2 == 1))
    expect([item["n"] for item in odd] == list(range(1, 2500, 2)), "find with a filter is wrong")
