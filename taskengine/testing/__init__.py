"""The storage conformance suite: run it on your own ``Storage`` adapter.

A custom adapter is done when it passes this suite (see docs/architecture.md). From your own pytest
module, subclass :class:`StorageConformance` and say how to make a fresh, empty
storage; every check becomes a test (``test_conformance[scan_order]``, ...)::

    # tests/test_my_storage.py
    from taskengine.testing import StorageConformance
    from my_package import MyStorage


    class TestMyStorage(StorageConformance):
        def make_storage(self):
            return MyStorage("postgresql://localhost/scratch")  # fresh and empty

If the storage needs cleaning up, override the ``storage`` fixture instead (the default
one calls ``close()`` when the storage has it)::

    import pytest

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def storage(self, tmp_path):
            with MyStorage(tmp_path / "db") as store:
                yield store

Without pytest, :func:`run_conformance` runs every check and returns the failures::

    failures = run_conformance(MyStorage)
    assert not failures, failures

To go further, :func:`agreement_machine` builds a hypothesis state machine that sends
the same random operations to your adapter and to :class:`MemoryStorage` and requires
identical answers after every step (``pip install hypothesis``)::

    TestAgreement = agreement_machine(MyStorage).TestCase

The checks need pytest only for :class:`StorageConformance`; each check is a plain
function ``check(storage) -> None`` that raises :class:`ConformanceError` (an
``AssertionError``) with a message saying which rule was broken. They cover: collection
management, environments and their errors, ``_id`` ordering (code point order, not
UTF-16 or locale order), paging and cursors, filters given to ``scan``, counts, exact
round-trip of every value type (dates included), fresh copies in and out, all-or-nothing
inserts, per-item outcomes of batched replace/delete, bad input leaving the store
unchanged, ``atomic()`` (and its rollback, when the adapter declares
``atomic_rolls_back``), and concurrent writers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    InvalidEnvironment,
    InvalidItem,
    InvalidRequest,
    SandboxNotEnabled,
)
from taskengine.storage.base import CollectionInfo, Count, Environment, Page, Storage, WriteResult
from taskengine.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from hypothesis.stateful import RuleBasedStateMachine

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "ConformanceError",
    "StorageConformance",
    "agreement_machine",
    "run_conformance",
    "same_value",
]

StorageFactory = Callable[[], Storage]


class ConformanceError(AssertionError):
    """A storage adapter broke a rule of the ``Storage`` contract."""


@attrs.frozen
class Check:
    """One named rule of the contract and the function that checks it on a fresh storage."""

    name: str
    run: Callable[[Storage], None] = attrs.field(repr=False)

    @property
    def description(self) -> str:
        """The rule, in words (the check function's docstring)."""
        return (self.run.__doc__ or self.name).strip()


@attrs.frozen
class CheckFailure:
    """A check that failed on an adapter: its name and the error it raised."""

    name: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.name}: {type(self.error).__name__}: {self.error}"


_REGISTRY: list[Check] = []


def _check(fn: Callable[[Storage], None]) -> Callable[[Storage], None]:
    _REGISTRY.append(Check(fn.__name__.removeprefix("check_"), fn))
    return fn


# -- helpers -----------------------------------------------------------------------------


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def _raises(expected: type[BaseException], what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except expected:
        return
    except Exception as exc:
        raise ConformanceError(
            f"{what}: expected {expected.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise ConformanceError(f"{what}: expected {expected.__name__}, nothing was raised")


def same_value(a: object, b: object) -> bool:
    """Strict equality for stored values: same types, key order, ``-0.0``, date forms.

    ``True`` is not ``1``, ``1`` is not ``1.0``, ``-0.0`` is not ``0.0``, a naive
    ``datetime`` is not an aware one and aware ones must share their UTC offset.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        assert isinstance(b, datetime)
        return (
            a == b and a.utcoffset() == b.utcoffset() and (a.tzinfo is None) == (b.tzinfo is None)
        )
    return a == b


def _all(storage: Storage, collection: str, env: Environment | str = "LIVE") -> list[Any]:
    """Every item by paging through scan with a small page, checking the paging rules."""
    items: list[Any] = []
    after: str | None = None
    for _ in range(100_000):
        page = storage.scan(collection, env, after=after, limit=7)
        _expect(isinstance(page, Page), f"scan must return a Page, got {type(page).__name__}")
        _expect(len(page.items) <= 7, f"scan(limit=7) returned {len(page.items)} items")
        items.extend(page.items)
        if page.cursor is None:
            return items
        _expect(
            after is None or page.cursor > after,
            f"scan cursor did not advance: after={after!r}, cursor={page.cursor!r}",
        )
        after = page.cursor
    raise ConformanceError("scan never returned cursor=None")


def _ids(items: list[Any]) -> list[str]:
    return [item["_id"] for item in items]


def _get(storage: Storage, collection: str, item_id: str, env: str = "LIVE") -> Any:
    return storage.get_item(collection, env, item_id)


# -- collections and environments --------------------------------------------------------


@_check
def check_collections(storage: Storage) -> None:
    """create/info/list/drop collections; CollectionExists and CollectionNotFound."""
    _expect(storage.list_collections() == [], "a fresh storage must have no collections")
    info = storage.create_collection("b", sandbox=True, publish_plugin=True)
    _expect(
        info == CollectionInfo("b", True, True),
        f"create_collection returned {info!r}",
    )
    storage.create_collection("a")
    storage.create_collection("B", publish_plugin=True)
    _expect(
        storage.collection_info("a") == CollectionInfo("a", False, False),
        f"collection_info('a') is {storage.collection_info('a')!r}",
    )
    _expect(
        storage.collection_info("b") == CollectionInfo("b", True, True),
        f"collection_info('b') is {storage.collection_info('b')!r}",
    )
    names = [info.name for info in storage.list_collections()]
    _expect(names == ["B", "a", "b"], f"list_collections must sort by name, got {names}")
    _raises(
        CollectionExists, "creating an existing collection", lambda: storage.create_collection("a")
    )
    _expect(
        storage.collection_info("a") == CollectionInfo("a", False, False),
        "a failed create_collection changed the existing collection",
    )
    storage.insert_items("a", "LIVE", [{"_id": "x"}])
    storage.drop_collection("a")
    _raises(CollectionNotFound, "collection_info after drop", lambda: storage.collection_info("a"))
    _raises(
        CollectionNotFound, "dropping a dropped collection", lambda: storage.drop_collection("a")
    )
    names = [info.name for info in storage.list_collections()]
    _expect(names == ["B", "b"], f"after dropping 'a', list_collections is {names}")
    storage.create_collection("a")
    _expect(_all(storage, "a") == [], "a re-created collection must be empty")


@_check
def check_unknown_collection(storage: Storage) -> None:
    """Every item method on an unknown collection raises CollectionNotFound."""
    storage.create_collection("known")
    calls: dict[str, Callable[[], object]] = {
        "collection_info": lambda: storage.collection_info("nope"),
        "drop_collection": lambda: storage.drop_collection("nope"),
        "scan": lambda: storage.scan("nope", "LIVE"),
        "count": lambda: storage.count("nope", "LIVE"),
        "insert_items": lambda: storage.insert_items("nope", "LIVE", [{"_id": "x"}]),
        "get_item": lambda: storage.get_item("nope", "LIVE", "x"),
        "find": lambda: storage.find("nope", "LIVE"),
        "replace_items": lambda: storage.replace_items("nope", "LIVE", [{"_id": "x"}]),
        "delete_items": lambda: storage.delete_items("nope", "LIVE", ["x"]),
    }
    for name, call in calls.items():
        _raises(CollectionNotFound, f"{name} on an unknown collection", call)
    _expect(
        [info.name for info in storage.list_collections()] == ["known"],
        "calls on an unknown collection must not create it",
    )


@_check
def check_environments(storage: Storage) -> None:
    """LIVE/SANDBOX as enum or string, separate item sets; bad names and no sandbox raise."""
    storage.create_collection("box", sandbox=True)
    storage.create_collection("plain")
    storage.insert_items("box", Environment.LIVE, [{"_id": "a", "env": "live"}])
    storage.insert_items("box", "SANDBOX", [{"_id": "a", "env": "sandbox"}, {"_id": "b"}])
    _expect(
        _all(storage, "box", "LIVE") == [{"_id": "a", "env": "live"}],
        "LIVE must not see SANDBOX items",
    )
    _expect(
        _ids(_all(storage, "box", Environment.SANDBOX)) == ["a", "b"],
        "SANDBOX must hold its own items",
    )
    for bad in ("live", "SANDBOX_PREFERRED", "", None, 0, "PROD"):
        calls: dict[str, Callable[[], object]] = {
            "scan": lambda b=bad: storage.scan("box", b),  # type: ignore[misc]
            "count": lambda b=bad: storage.count("box", b),  # type: ignore[misc]
            "insert_items": lambda b=bad: storage.insert_items(  # type: ignore[misc]
                "box", b, [{"_id": "z"}]
            ),
            "get_item": lambda b=bad: storage.get_item("box", b, "a"),  # type: ignore[misc]
            "find": lambda b=bad: storage.find("box", b),  # type: ignore[misc]
            "replace_items": lambda b=bad: storage.replace_items(  # type: ignore[misc]
                "box", b, [{"_id": "a"}]
            ),
            "delete_items": lambda b=bad: storage.delete_items("box", b, ["a"]),  # type: ignore[misc]
        }
        for name, call in calls.items():
            _raises(InvalidEnvironment, f"{name} with environment {bad!r}", call)
    calls = {
        "scan": lambda: storage.scan("plain", "SANDBOX"),
        "count": lambda: storage.count("plain", "SANDBOX"),
        "insert_items": lambda: storage.insert_items("plain", "SANDBOX", [{"_id": "z"}]),
        "get_item": lambda: storage.get_item("plain", "SANDBOX", "a"),
        "find": lambda: storage.find("plain", Environment.SANDBOX),
        "replace_items": lambda: storage.replace_items("plain", "SANDBOX", [{"_id": "a"}]),
        "delete_items": lambda: storage.delete_items("plain", "SANDBOX", ["a"]),
    }
    for name, call in calls.items():
        _raises(SandboxNotEnabled, f"{name} on SANDBOX of a collection without one", call)
    _expect(_ids(_all(storage, "box", "LIVE")) == ["a"], "bad calls changed LIVE items")
    _expect(_ids(_all(storage, "box", "SANDBOX")) == ["a", "b"], "bad calls changed SANDBOX")
    _expect(_all(storage, "plain") == [], "bad calls changed a collection")


# -- ordering, paging, filters -----------------------------------------------------------

_TRICKY_IDS = [
    "b", "a", "ba", "B", "Z", "10", "9", "2", " ", "a b", "ab", "aB",
    "é", "e", "z", "\u00ff", "\u0100", "\uffff", "\U00010000", "\U0001f600", "~",
]  # fmt: skip


@_check
def check_scan_order(storage: Storage) -> None:
    """scan and find return ascending _id in code point order (Python str order)."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": i, "n": n} for n, i in enumerate(_TRICKY_IDS)])
    expected = sorted(_TRICKY_IDS)
    got = _ids(_all(storage, "c"))
    _expect(got == expected, f"scan order must be code point order: expected {expected}, got {got}")
    page = storage.scan("c", "LIVE", limit=len(expected) + 5)
    _expect(_ids(page.items) == expected, f"one big page is out of order: {_ids(page.items)}")
    _expect(page.cursor is None, "a page holding every item must have cursor=None")
    found = _ids(list(storage.find("c", "LIVE")))
    _expect(found == expected, f"find order must be code point order, got {found}")


@_check
def check_scan_paging(storage: Storage) -> None:
    """scan(after, limit): _id > after, at most limit items, cursor continues, None at end."""
    storage.create_collection("c")
    ids = [f"item{n:03d}" for n in range(25)]
    storage.insert_items("c", "LIVE", [{"_id": i} for i in reversed(ids)])
    for limit in (1, 2, 5, 24, 25, 26, 1000):
        got: list[str] = []
        after: str | None = None
        for _ in range(100):
            page = storage.scan("c", "LIVE", after=after, limit=limit)
            _expect(len(page.items) <= limit, f"scan(limit={limit}) returned {len(page.items)}")
            got.extend(_ids(page.items))
            if page.cursor is None:
                break
            after = page.cursor
        _expect(got == ids, f"paging with limit={limit} gave {got}")
    for after in ("", "item", "item004", "item0045", "item024", "item1", "zzz", "\U0010ffff"):
        page = storage.scan("c", "LIVE", after=after, limit=1000)
        expected = [i for i in ids if i > after]
        _expect(
            _ids(page.items) == expected,
            f"scan(after={after!r}) must return the ids > after, got {_ids(page.items)}",
        )
        _expect(page.cursor is None, f"scan(after={after!r}, limit=1000) must end the scan")
    empty = storage.scan("c", "LIVE", after="item024", limit=5)
    _expect(empty.items == [] and empty.cursor is None, "a scan past the end must be ([], None)")
    for bad in (0, -1, 1.5, "10", None, True):
        _raises(
            InvalidRequest,
            f"scan(limit={bad!r})",
            lambda b=bad: storage.scan("c", "LIVE", limit=b),  # type: ignore[misc]
        )


@_check
def check_scan_filter(storage: Storage) -> None:
    """scan with a filter never drops an accepted item, and its cursor continues correctly."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"k{n:03d}", "n": n} for n in range(60)])

    def every_seventh(doc: Mapping[str, Any]) -> bool:
        n = doc.get("n")
        return isinstance(n, int) and n % 7 == 0

    def nothing(doc: Mapping[str, Any]) -> bool:
        return False

    for flt, expected in (
        (every_seventh, [f"k{n:03d}" for n in range(0, 60, 7)]),
        (nothing, []),
    ):
        for limit in (1, 3, 10, 100):
            got: list[str] = []
            after: str | None = None
            for _ in range(200):
                page = storage.scan("c", "LIVE", after=after, limit=limit, filter=flt)
                _expect(len(page.items) <= limit, f"filtered scan exceeded limit={limit}")
                got.extend(item["_id"] for item in page.items if flt(item))
                if page.cursor is None:
                    break
                _expect(after is None or page.cursor > after, "filtered scan cursor went back")
                after = page.cursor
            else:
                raise ConformanceError("a filtered scan never finished")
            _expect(
                got == expected,
                f"filtered scan (limit={limit}, {flt.__name__}) accepted {got}, "
                f"expected {expected}",
            )
        found = _ids(list(storage.find("c", "LIVE", flt)))
        _expect(found == expected, f"find with {flt.__name__} returned {found}")


@_check
def check_count(storage: Storage) -> None:
    """count is a Count; when exact it is the number of (accepted) items."""
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "LIVE", [{"_id": f"{n:02d}", "even": n % 2 == 0} for n in range(11)])
    for flt, expected in (
        (None, 11),
        (lambda doc: doc.get("even") is True, 6),
        (lambda doc: False, 0),
    ):
        result = storage.count("c", "LIVE", flt)
        _expect(isinstance(result, Count), f"count must return a Count, got {result!r}")
        _expect(isinstance(result.value, int) and result.value >= 0, f"bad count {result!r}")
        if result.exact:
            _expect(result.value == expected, f"exact count is {result.value}, expected {expected}")
    sandbox = storage.count("c", "SANDBOX")
    _expect(not sandbox.exact or sandbox.value == 0, f"empty SANDBOX counted {sandbox!r}")


# -- values ------------------------------------------------------------------------------

_PLUS_0530 = timezone(timedelta(hours=5, minutes=30))


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
        "offset": datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=_PLUS_0530),
        "dates": [datetime(1970, 1, 1), {"when": datetime(2030, 6, 1, 8, tzinfo=timezone.utc)}],
        "almost_date": {"$date": "2024-01-01", "other": 1},
    }


@_check
def check_round_trip(storage: Storage) -> None:
    """Every value type comes back exactly (types, key order, -0.0, dates) via every read."""
    storage.create_collection("c")
    original = _values_item()
    storage.insert_items("c", "LIVE", [original])
    expected = _values_item()
    reads = {
        "get_item": _get(storage, "c", "values"),
        "scan": storage.scan("c", "LIVE").items[0],
        "find": next(iter(storage.find("c", "LIVE"))),
    }
    for how, got in reads.items():
        _expect(isinstance(got, dict), f"{how} must return a dict, got {type(got).__name__}")
        for key, value in expected.items():
            _expect(key in got, f"{how} lost the field {key!r}")
            _expect(
                same_value(got[key], value),
                f"{how}: field {key!r} did not round-trip: stored {value!r}, got {got[key]!r}",
            )
        _expect(list(got) == list(expected), f"{how} changed the key order: {list(got)}")
    changed = dict(expected, int=43, added=[datetime(2001, 1, 1)])
    storage.replace_items("c", "LIVE", [changed])
    got = _get(storage, "c", "values")
    _expect(same_value(got, changed), f"replace_items did not round-trip: {got!r}")


@_check
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
    got = _get(storage, "c", "d")
    utc = datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
    offset = datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    _expect(same_value(got["z"], utc), f"'Z' date came back as {got['z']!r}")
    _expect(same_value(got["offset"], offset), f"offset date came back as {got['offset']!r}")
    _expect(
        same_value(got["naive"], datetime(2024, 3, 1, 10)),
        f"naive date came back as {got['naive']!r}",
    )
    _expect(same_value(got["nested"], [utc]), f"nested date came back as {got['nested']!r}")


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


@_check
def check_invalid_items(storage: Storage) -> None:
    """Items that cannot be stored raise InvalidItem on insert and replace; nothing changes."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": "bad", "v": "kept"}, {"_id": "keep", "v": 1}])
    before = _all(storage, "c")
    for what, item in _BAD_ITEMS:
        _raises(
            InvalidItem,
            f"insert_items with an item with {what}",
            lambda i=item: storage.insert_items("c", "LIVE", [{"_id": "new1"}, i]),  # type: ignore[misc]
        )
        _raises(
            InvalidItem,
            f"replace_items with an item with {what}",
            lambda i=item: storage.replace_items("c", "LIVE", [{"_id": "keep", "v": 2}, i]),  # type: ignore[misc]
        )
        after = _all(storage, "c")
        _expect(after == before, f"a rejected item with {what} changed the store: {after}")
    for bad_id in (1, None, ["x"]):
        _raises(
            InvalidItem,
            f"delete_items with id {bad_id!r}",
            lambda b=bad_id: storage.delete_items("c", "LIVE", ["keep", b]),  # type: ignore[misc]
        )
        _raises(
            InvalidItem,
            f"get_item with id {bad_id!r}",
            lambda b=bad_id: storage.get_item("c", "LIVE", b),  # type: ignore[misc]
        )
    _expect(_all(storage, "c") == before, "a rejected delete changed the store")


@_check
def check_copies(storage: Storage) -> None:
    """Items in and out are copies: mutating them never changes the store."""
    storage.create_collection("c")
    item: dict[str, Any] = {"_id": "a", "list": [1, {"x": 1}], "dict": {"y": [2]}}
    storage.insert_items("c", "LIVE", [item])
    item["list"][1]["x"] = "changed"
    item["dict"]["y"].append(3)
    item["new"] = True
    expected = {"_id": "a", "list": [1, {"x": 1}], "dict": {"y": [2]}}
    _expect(_get(storage, "c", "a") == expected, "mutating an inserted dict changed the store")
    reads: dict[str, Callable[[], Any]] = {
        "get_item": lambda: _get(storage, "c", "a"),
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
        _expect(
            _get(storage, "c", "a") == expected,
            f"mutating an item returned by {how} changed the store",
        )
        _expect(read() is not read(), f"{how} returned the same object twice")
    replacement: dict[str, Any] = {"_id": "a", "nested": {"k": [1]}}
    storage.replace_items("c", "LIVE", [replacement])
    replacement["nested"]["k"].append(2)
    _expect(
        _get(storage, "c", "a") == {"_id": "a", "nested": {"k": [1]}},
        "mutating a replacement dict after replace_items changed the store",
    )


# -- writes ------------------------------------------------------------------------------


@_check
def check_insert(storage: Storage) -> None:
    """insert_items returns the count, accepts any iterable and is all or nothing."""
    storage.create_collection("c")
    _expect(storage.insert_items("c", "LIVE", []) == 0, "inserting nothing must return 0")
    inserted = storage.insert_items("c", "LIVE", ({"_id": f"g{n}"} for n in range(3)))
    _expect(inserted == 3, f"insert_items of a generator of 3 returned {inserted}")
    storage.insert_items("c", "LIVE", [{"_id": "a", "v": 1}])
    _raises(
        DuplicateItem,
        "inserting an _id that is stored",
        lambda: storage.insert_items("c", "LIVE", [{"_id": "n1"}, {"_id": "a", "v": 2}]),
    )
    _raises(
        DuplicateItem,
        "inserting the same _id twice in one batch",
        lambda: storage.insert_items("c", "LIVE", [{"_id": "n2"}, {"_id": "n2"}]),
    )
    ids = _ids(_all(storage, "c"))
    _expect(ids == ["a", "g0", "g1", "g2"], f"a failed insert left items behind: {ids}")
    _expect(_get(storage, "c", "a") == {"_id": "a", "v": 1}, "a failed insert changed 'a'")
    _expect(_get(storage, "c", "n1") is None, "get_item of an id never stored must be None")


def _duplicate_named(storage: Storage, batch: list[dict[str, Any]], what: str) -> str:
    """The ``item_id`` of the DuplicateItem that inserting ``batch`` raises."""
    try:
        storage.insert_items("c", "LIVE", batch)
    except DuplicateItem as exc:
        _expect(exc.collection == "c", f"{what}: DuplicateItem names collection {exc.collection!r}")
        return str(exc.item_id)
    except Exception as exc:
        raise ConformanceError(
            f"{what}: expected DuplicateItem, got {type(exc).__name__}: {exc}"
        ) from exc
    raise ConformanceError(f"{what}: expected DuplicateItem, nothing was raised")


@_check
def check_insert_duplicate(storage: Storage) -> None:
    """DuplicateItem names the real offending _id (stored or repeated); the store is unchanged."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"s{n}", "v": n} for n in range(5)])
    before = _all(storage, "c")
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
        _expect(named in allowed, f"{what}: DuplicateItem named {named!r}, expected one of "
                f"{sorted(allowed)} (an id of the batch that is stored or repeated)")  # fmt: skip
        after = _all(storage, "c")
        _expect(
            same_value(after, before),
            f"{what}: the failed insert changed the store: {_ids(after)[:8]} ...",
        )
        for item_id in ids:
            _expect(
                item_id.startswith("s") or _get(storage, "c", item_id) is None,
                f"{what}: the failed insert left {item_id!r} behind",
            )


@_check
def check_replace(storage: Storage) -> None:
    """replace_items overwrites whole items, reports missing ids, never inserts them."""
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "LIVE", [{"_id": "a", "old": 1}, {"_id": "b", "old": 2}])
    storage.insert_items("c", "SANDBOX", [{"_id": "a", "sandbox": True}])
    result = storage.replace_items("c", "LIVE", [{"_id": "a", "new": 1}, {"_id": "zz", "new": 2}])
    _expect(isinstance(result, WriteResult), f"replace_items must return a WriteResult: {result!r}")
    _expect(
        tuple(result.done) == ("a",) and tuple(result.missing) == ("zz",),
        f"replace_items reported {result!r}, expected done=('a',), missing=('zz',)",
    )
    _expect(_get(storage, "c", "a") == {"_id": "a", "new": 1}, "replace must overwrite the item")
    _expect(_get(storage, "c", "zz") is None, "replace_items must not insert a missing id")
    _expect(
        _get(storage, "c", "a", "SANDBOX") == {"_id": "a", "sandbox": True},
        "replacing in LIVE changed SANDBOX",
    )
    result = storage.replace_items("c", "LIVE", [{"_id": "b", "v": 1}, {"_id": "b", "v": 2}])
    _expect(
        tuple(result.done) == ("b",) and tuple(result.missing) == (),
        f"a repeated id must be reported once, got {result!r}",
    )
    _expect(_get(storage, "c", "b") == {"_id": "b", "v": 2}, "the last repeated item must win")
    batch = [{"_id": "a", "n": n} for n in range(3)] + [{"_id": "b", "n": 9}]
    storage.replace_items("c", "LIVE", batch)
    _expect(
        _all(storage, "c") == [{"_id": "a", "n": 2}, {"_id": "b", "n": 9}],
        f"every item of a batch must be written, got {_all(storage, 'c')}",
    )
    empty = storage.replace_items("c", "LIVE", [])
    _expect(tuple(empty.done) == () and tuple(empty.missing) == (), "empty batch must be a no-op")


@_check
def check_delete(storage: Storage) -> None:
    """delete_items removes ids, reports missing ones, each id once."""
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "LIVE", [{"_id": i} for i in ("a", "b", "c", "d")])
    storage.insert_items("c", "SANDBOX", [{"_id": "a"}])
    result = storage.delete_items("c", "LIVE", ["a", "zz", "a", "c", ""])
    _expect(isinstance(result, WriteResult), f"delete_items must return a WriteResult: {result!r}")
    _expect(
        tuple(result.done) == ("a", "c") and tuple(result.missing) == ("zz", ""),
        f"delete_items reported {result!r}, expected done=('a', 'c'), missing=('zz', '')",
    )
    _expect(_ids(_all(storage, "c")) == ["b", "d"], "delete_items left the wrong items")
    _expect(_ids(_all(storage, "c", "SANDBOX")) == ["a"], "deleting in LIVE changed SANDBOX")
    again = storage.delete_items("c", "LIVE", ["a"])
    _expect(
        tuple(again.done) == () and tuple(again.missing) == ("a",),
        f"deleting a deleted id must report it missing, got {again!r}",
    )
    storage.insert_items("c", "LIVE", [{"_id": "a", "back": True}])
    _expect(_get(storage, "c", "a") == {"_id": "a", "back": True}, "a deleted id can be reused")


@_check
def check_find(storage: Storage) -> None:
    """find raises collection errors at the call, then yields accepted items in _id order."""
    storage.create_collection("c")
    _raises(CollectionNotFound, "find on an unknown collection (before next())",
            lambda: storage.find("nope", "LIVE"))  # fmt: skip
    storage.insert_items("c", "LIVE", [{"_id": f"{n:04d}", "n": n} for n in range(2500, 0, -1)])
    found = list(storage.find("c", "LIVE"))
    _expect(len(found) == 2500, f"find must yield every item, got {len(found)}")
    _expect(_ids(found) == sorted(_ids(found)), "find must yield items in _id order")
    odd = list(storage.find("c", "LIVE", lambda doc: doc["n"] % 2 == 1))
    _expect([item["n"] for item in odd] == list(range(1, 2500, 2)), "find with a filter is wrong")


@_check
def check_atomic(storage: Storage) -> None:
    """atomic() is a context manager around writes; errors inside propagate unchanged."""
    storage.create_collection("c")
    with storage.atomic():
        storage.insert_items("c", "LIVE", [{"_id": "a"}, {"_id": "b"}])
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
        storage.delete_items("c", "LIVE", ["b"])
    _expect(_all(storage, "c") == [{"_id": "a", "v": 1}], "writes inside atomic() were lost")

    class Boom(Exception):
        pass

    try:
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 2}])
            raise Boom
    except Boom:
        pass
    else:
        raise ConformanceError("atomic() swallowed an exception raised inside it")
    got = _get(storage, "c", "a")
    _expect(got in ({"_id": "a", "v": 1}, {"_id": "a", "v": 2}), f"atomic() left {got!r} behind")
    storage.replace_items("c", "LIVE", [{"_id": "a", "v": 3}])
    _expect(_get(storage, "c", "a") == {"_id": "a", "v": 3}, "storage unusable after atomic()")


class _Boom(Exception):
    """Raised inside atomic() blocks by the rollback check."""


def _snapshot(storage: Storage) -> list[Any]:
    """Every collection and every item of each of its environments, for comparison."""
    state: list[Any] = []
    for info in storage.list_collections():
        envs = ("LIVE", "SANDBOX") if info.sandbox_enabled else ("LIVE",)
        state.append([_materialise(info), [_all(storage, info.name, env) for env in envs]])
    return state


def _rolled_back(storage: Storage, before: list[Any], block: Callable[[], None], what: str) -> None:
    """Run ``block`` in atomic(), raise inside it; the storage must be as ``before``."""
    try:
        with storage.atomic():
            block()
            raise _Boom
    except _Boom:
        pass
    else:  # pragma: no cover - the block raised something else, which propagates
        raise ConformanceError("atomic() swallowed an exception raised inside it")
    after = _snapshot(storage)
    _expect(same_value(after, before), f"atomic() did not roll back {what}: {after!r}")


@_check
def check_atomic_rollback(storage: Storage) -> None:
    """With atomic_rolls_back, an exception undoes the block's writes (nested: its own)."""
    claim = getattr(storage, "atomic_rolls_back", False)
    _expect(type(claim) is bool, f"atomic_rolls_back must be a bool, got {claim!r}")
    if not claim:
        return
    storage.create_collection("c", sandbox=True)
    storage.create_collection("gone")
    storage.insert_items("c", "LIVE", [{"_id": k, "v": k} for k in "abcdefgh"])
    storage.insert_items("c", "SANDBOX", [{"_id": "s", "v": [1, {"x": 2}]}])
    storage.insert_items("gone", "LIVE", [{"_id": "g"}])
    storage.delete_items("c", "LIVE", ["h"])
    before = _snapshot(storage)

    def writes() -> None:
        storage.insert_items("c", "LIVE", [{"_id": "n1"}, {"_id": "h", "v": "back"}])
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}, {"_id": "a", "v": 2}])
        storage.delete_items("c", "LIVE", ["b", "c", "d", "e", "f", "n1"])
        storage.insert_items("c", "LIVE", [{"_id": "b", "v": "again"}])
        storage.replace_items("c", "SANDBOX", [{"_id": "s", "v": None}])
        storage.delete_items("c", "SANDBOX", ["s"])

    _rolled_back(storage, before, writes, "inserts, replaces and deletes")

    def collections() -> None:
        storage.create_collection("new", sandbox=True)
        storage.insert_items("new", "LIVE", [{"_id": "x"}])
        storage.replace_items("gone", "LIVE", [{"_id": "g", "v": 1}])
        storage.drop_collection("gone")
        storage.create_collection("gone", publish_plugin=True)

    _rolled_back(storage, before, collections, "collection changes")

    def nested() -> None:
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": "outer"}])
        try:
            with storage.atomic():
                storage.replace_items("c", "LIVE", [{"_id": "g", "v": "inner"}])
                storage.delete_items("c", "LIVE", ["a", "c"])
                storage.create_collection("inner")
                raise _Boom
        except _Boom:
            pass
        _expect(_get(storage, "c", "a") == {"_id": "a", "v": "outer"},
                "a failing inner atomic() block undid the outer block's write")  # fmt: skip
        _expect(_get(storage, "c", "g") == {"_id": "g", "v": "g"}
                and _get(storage, "c", "c") == {"_id": "c", "v": "c"}
                and "inner" not in [info.name for info in storage.list_collections()],
                "a failing inner atomic() block kept its writes")  # fmt: skip
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "g", "v": "inner ok"}])

    _rolled_back(storage, before, nested, "nested blocks")

    with storage.atomic():
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": "kept"}])
        storage.delete_items("c", "LIVE", ["b"])
    _expect(_get(storage, "c", "a") == {"_id": "a", "v": "kept"}
            and _get(storage, "c", "b") is None,
            "writes of a block that ended normally were lost")  # fmt: skip


@_check
def check_concurrent_writers(storage: Storage) -> None:
    """Writes from several threads at once are all kept (no lost updates)."""
    storage.create_collection("c")
    threads_n, rounds = 4, 25
    storage.insert_items("c", "LIVE", [{"_id": "shared", "v": -1}])
    start = threading.Barrier(threads_n, timeout=30)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                storage.insert_items("c", "LIVE", [{"_id": f"t{t}-{r:02d}", "v": 0}])
                storage.replace_items("c", "LIVE", [{"_id": f"t{t}-{r:02d}", "v": r}])
                storage.scan("c", "LIVE", limit=10)
                storage.replace_items("c", "LIVE", [{"_id": "shared", "v": t}])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    _expect(not any(worker.is_alive() for worker in workers), "writer threads did not finish")
    if errors:
        raise ConformanceError(f"a writer thread failed: {errors[0]!r}") from errors[0]
    items = {item["_id"]: item for item in _all(storage, "c")}
    _expect(len(items) == threads_n * rounds + 1, f"expected {threads_n * rounds + 1} items, "
            f"found {len(items)}")  # fmt: skip
    for t in range(threads_n):
        for r in range(rounds):
            got = items.get(f"t{t}-{r:02d}")
            _expect(got == {"_id": f"t{t}-{r:02d}", "v": r}, f"lost update: {got!r}")
    _expect(items["shared"]["v"] in range(threads_n), f"shared item is {items['shared']!r}")


CHECKS: tuple[Check, ...] = tuple(_REGISTRY)
"""Every check of the suite, in a stable order."""


# -- running the suite -------------------------------------------------------------------


def _close(storage: object) -> None:
    close = getattr(storage, "close", None)
    if callable(close):
        close()


def run_conformance(
    make_storage: StorageFactory, checks: tuple[Check, ...] | None = None
) -> list[CheckFailure]:
    """Run checks (default: all of :data:`CHECKS`), each on a fresh storage; the failures.

    ``make_storage`` is called once per check and must return an empty storage; the
    storage's ``close()`` is called afterwards when it has one. An exception other than
    :class:`ConformanceError` counts as a failure too.
    """
    failures: list[CheckFailure] = []
    for check in CHECKS if checks is None else checks:
        storage = make_storage()
        try:
            check.run(storage)
        except Exception as exc:
            failures.append(CheckFailure(check.name, exc))
        finally:
            _close(storage)
    return failures


class StorageConformance:
    """Subclass as ``Test...`` in your pytest module; each check becomes a test.

    Provide a fresh, empty storage per test by overriding :meth:`make_storage`, or by
    overriding the ``storage`` fixture (to manage cleanup yourself).
    """

    def make_storage(self) -> Storage:
        """Return a fresh, empty storage (override this, or the ``storage`` fixture)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_storage() or the storage fixture"
        )

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        """A fresh storage from :meth:`make_storage`, closed after the test if it can be."""
        store = self.make_storage()
        try:
            yield store
        finally:
            _close(store)

    @pytest.mark.parametrize("check", CHECKS, ids=[check.name for check in CHECKS])
    def test_conformance(self, storage: Storage, check: Check) -> None:
        """The storage keeps the rule the check names (see the check's docstring)."""
        check.run(storage)


# -- agreement with the reference adapter ------------------------------------------------


def agreement_machine(
    make_storage: StorageFactory, make_reference: StorageFactory = MemoryStorage
) -> type[RuleBasedStateMachine]:
    """A hypothesis state machine: random operations on two storages must agree.

    Every step runs the same call on ``make_storage()`` and on ``make_reference()``
    and requires the same result (compared with :func:`same_value`) or the same
    exception type; after every step both hold the same collections and items. Run it
    from pytest with ``TestAgreement = agreement_machine(MyStorage).TestCase``.
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

    ids = st.sampled_from(["a", "b", "ab", "B", "é", "\uffff", "\U00010000", "a\x00", "z", ""])
    names = st.sampled_from(["c1", "c2"])
    envs = st.sampled_from(["LIVE", "SANDBOX", Environment.LIVE, "bogus"])
    dates = st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
    ) | st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([timezone.utc, _PLUS_0530, timezone(timedelta(hours=-8))]),
    )
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5)
        | dates
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    )
    bad_values = st.sampled_from([float("nan"), 2**63, (1,), {"$date": "nope"}])
    fields = st.dictionaries(st.sampled_from(["v", "w", "_x"]), values | bad_values, max_size=2)
    items = st.builds(lambda i, f: {**f, "_id": i}, ids, fields)
    filters: dict[str, Callable[[Mapping[str, Any]], bool] | None] = {
        "none": None,
        "has_v": lambda doc: "v" in doc,
        "v_is_int": lambda doc: type(doc.get("v")) is int,
    }
    filter_names = st.sampled_from(sorted(filters))

    class StorageAgreement(RuleBasedStateMachine):
        """The same random calls on two storages give the same answers."""

        def __init__(self) -> None:
            super().__init__()
            self.subject = make_storage()
            self.reference = make_reference()

        def teardown(self) -> None:
            """Close both storages."""
            _close(self.subject)
            _close(self.reference)

        def both(self, call: Callable[[Storage], Any]) -> Any:
            """Run ``call`` on both storages; require equal results or equal error types."""
            outcomes = []
            for storage in (self.subject, self.reference):
                try:
                    outcomes.append(("ok", _materialise(call(storage))))
                except Exception as exc:
                    outcomes.append(("error", type(exc)))
            subject, reference = outcomes
            if subject[0] == "ok" and reference[0] == "ok":
                assert same_value(subject[1], reference[1]), (
                    f"storage returned {subject[1]!r}, reference {reference[1]!r}"
                )
            else:
                assert subject == reference, f"storage: {subject}, reference: {reference}"
            return reference[1]

        @rule(name=names, sandbox=st.booleans(), plugin=st.booleans())
        def create(self, name: str, sandbox: bool, plugin: bool) -> None:
            """Create a collection."""
            self.both(lambda s: s.create_collection(name, sandbox=sandbox, publish_plugin=plugin))

        @rule(name=names)
        def drop(self, name: str) -> None:
            """Drop a collection."""
            self.both(lambda s: s.drop_collection(name))

        @rule(name=names, env=envs, batch=st.lists(items, max_size=4))
        def insert(self, name: str, env: str, batch: list[dict[str, Any]]) -> None:
            """Insert a batch."""
            self.both(lambda s: s.insert_items(name, env, batch))

        @rule(name=names, env=envs, batch=st.lists(items, max_size=4))
        def replace(self, name: str, env: str, batch: list[dict[str, Any]]) -> None:
            """Replace a batch."""
            self.both(lambda s: s.replace_items(name, env, batch))

        @rule(name=names, env=envs, batch=st.lists(ids, max_size=4))
        def delete(self, name: str, env: str, batch: list[str]) -> None:
            """Delete a batch of ids."""
            self.both(lambda s: s.delete_items(name, env, batch))

        @rule(
            name=names,
            env=envs,
            after=st.none() | ids,
            limit=st.integers(min_value=1, max_value=4),
            flt=filter_names,
        )
        def scan(self, name: str, env: str, after: str | None, limit: int, flt: str) -> None:
            """Scan one page, maybe with a filter."""
            f = filters[flt]
            self.both(lambda s: _accepted(s.scan(name, env, after=after, limit=limit, filter=f), f))

        @rule(name=names, env=envs, flt=filter_names)
        def count_and_find(self, name: str, env: str, flt: str) -> None:
            """Count and find, maybe with a filter."""
            f = filters[flt]
            self.both(lambda s: s.count(name, env, f))
            self.both(lambda s: list(s.find(name, env, f)))

        @rule(name=names, env=envs, item_id=ids)
        def get(self, name: str, env: str, item_id: str) -> None:
            """Get one item."""
            self.both(lambda s: s.get_item(name, env, item_id))

        @invariant()
        def same_contents(self) -> None:
            """Both hold the same collections and items (and the reference's invariants)."""
            self.both(lambda s: s.list_collections())
            for info in self.reference.list_collections():
                for env in ("LIVE", "SANDBOX") if info.sandbox_enabled else ("LIVE",):
                    self.both(partial(_everything, name=info.name, env=env))
            check = getattr(self.reference, "_check", None)
            if callable(check):
                check()
            check = getattr(self.subject, "_check", None)
            if callable(check):
                check()

    return StorageAgreement


def _accepted(page: Page, flt: Callable[[Mapping[str, Any]], bool] | None) -> Any:
    """What a caller sees of a page: the accepted items (re-checked) and the cursor."""
    items = page.items if flt is None else [item for item in page.items if flt(item)]
    return [items, page.cursor]


def _everything(storage: Storage, *, name: str, env: str) -> list[Any]:
    out: list[Any] = []
    after: str | None = None
    while True:
        page = storage.scan(name, env, after=after, limit=3)
        out.extend(page.items)
        if page.cursor is None:
            return out
        after = page.cursor


def _materialise(value: Any) -> Any:
    """Plain values for comparison: attrs records become lists of their fields."""
    if isinstance(value, (Page, Count, WriteResult, CollectionInfo)):
        return [_materialise(field) for field in attrs.astuple(value, recurse=False)]
    if isinstance(value, tuple):
        return [_materialise(v) for v in value]
    if isinstance(value, list):
        return [_materialise(v) for v in value]
    return value
