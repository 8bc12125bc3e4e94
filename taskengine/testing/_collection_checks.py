"""Conformance checks: collections, environments, ``_id`` order, paging, filters, counts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    InvalidEnvironment,
    InvalidRequest,
    SandboxNotEnabled,
)
from taskengine.storage.base import CollectionInfo, Count, Environment, Storage
from taskengine.testing._checks import (
    ConformanceError,
    all_items,
    expect,
    expect_raises,
    ids_of,
    register,
)

# -- collections and environments --------------------------------------------------------


@register
def check_collections(storage: Storage) -> None:
    """create/info/list/drop collections; CollectionExists and CollectionNotFound."""
    expect(storage.list_collections() == [], "a fresh storage must have no collections")
    info = storage.create_collection("b", sandbox=True, publish_plugin=True)
    expect(
        info == CollectionInfo("b", True, True),
        f"create_collection returned {info!r}",
    )
    storage.create_collection("a")
    storage.create_collection("B", publish_plugin=True)
    expect(
        storage.collection_info("a") == CollectionInfo("a", False, False),
        f"collection_info('a') is {storage.collection_info('a')!r}",
    )
    expect(
        storage.collection_info("b") == CollectionInfo("b", True, True),
        f"collection_info('b') is {storage.collection_info('b')!r}",
    )
    names = [info.name for info in storage.list_collections()]
    expect(names == ["B", "a", "b"], f"list_collections must sort by name, got {names}")
    expect_raises(
        CollectionExists, "creating an existing collection", lambda: storage.create_collection("a")
    )
    expect(
        storage.collection_info("a") == CollectionInfo("a", False, False),
        "a failed create_collection changed the existing collection",
    )
    storage.insert_items("a", "LIVE", [{"_id": "x"}])
    storage.drop_collection("a")
    expect_raises(
        CollectionNotFound, "collection_info after drop", lambda: storage.collection_info("a")
    )
    expect_raises(
        CollectionNotFound, "dropping a dropped collection", lambda: storage.drop_collection("a")
    )
    names = [info.name for info in storage.list_collections()]
    expect(names == ["B", "b"], f"after dropping 'a', list_collections is {names}")
    storage.create_collection("a")
    expect(all_items(storage, "a") == [], "a re-created collection must be empty")


@register
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
        expect_raises(CollectionNotFound, f"{name} on an unknown collection", call)
    expect(
        [info.name for info in storage.list_collections()] == ["known"],
        "calls on an unknown collection must not create it",
    )


@register
def check_environments(storage: Storage) -> None:
    """LIVE/SANDBOX as enum or string, separate item sets; bad names and no sandbox raise."""
    storage.create_collection("box", sandbox=True)
    storage.create_collection("plain")
    storage.insert_items("box", Environment.LIVE, [{"_id": "a", "env": "live"}])
    storage.insert_items("box", "SANDBOX", [{"_id": "a", "env": "sandbox"}, {"_id": "b"}])
    expect(
        all_items(storage, "box", "LIVE") == [{"_id": "a", "env": "live"}],
        "LIVE must not see SANDBOX items",
    )
    expect(
        ids_of(all_items(storage, "box", Environment.SANDBOX)) == ["a", "b"],
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
            expect_raises(InvalidEnvironment, f"{name} with environment {bad!r}", call)
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
        expect_raises(SandboxNotEnabled, f"{name} on SANDBOX of a collection without one", call)
    expect(ids_of(all_items(storage, "box", "LIVE")) == ["a"], "bad calls changed LIVE items")
    expect(ids_of(all_items(storage, "box", "SANDBOX")) == ["a", "b"], "bad calls changed SANDBOX")
    expect(all_items(storage, "plain") == [], "bad calls changed a collection")


# -- ordering, paging, filters -----------------------------------------------------------

_TRICKY_IDS = [
    "b", "a", "ba", "B", "Z", "10", "9", "2", " ", "a b", "ab", "aB",
    "é", "e", "z", "\u00ff", "\u0100", "\uffff", "\U00010000", "\U0001f600", "~",
]  # fmt: skip


@register
def check_scan_order(storage: Storage) -> None:
    """scan and find return ascending _id in code point order (Python str order)."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": i, "n": n} for n, i in enumerate(_TRICKY_IDS)])
    expected = sorted(_TRICKY_IDS)
    got = ids_of(all_items(storage, "c"))
    expect(got == expected, f"scan order must be code point order: expected {expected}, got {got}")
    page = storage.scan("c", "LIVE", limit=len(expected) + 5)
    expect(ids_of(page.items) == expected, f"one big page is out of order: {ids_of(page.items)}")
    expect(page.cursor is None, "a page holding every item must have cursor=None")
    found = ids_of(list(storage.find("c", "LIVE")))
    expect(found == expected, f"find order must be code point order, got {found}")


@register
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
            expect(len(page.items) <= limit, f"scan(limit={limit}) returned {len(page.items)}")
            got.extend(ids_of(page.items))
            if page.cursor is None:
                break
            after = page.cursor
        expect(got == ids, f"paging with limit={limit} gave {got}")
    for after in ("", "item", "item004", "item0045", "item024", "item1", "zzz", "\U0010ffff"):
        page = storage.scan("c", "LIVE", after=after, limit=1000)
        expected = [i for i in ids if i > after]
        expect(
            ids_of(page.items) == expected,
            f"scan(after={after!r}) must return the ids > after, got {ids_of(page.items)}",
        )
        expect(page.cursor is None, f"scan(after={after!r}, limit=1000) must end the scan")
    empty = storage.scan("c", "LIVE", after="item024", limit=5)
    expect(empty.items == [] and empty.cursor is None, "a scan past the end must be ([], None)")
    for bad in (0, -1, 1.5, "10", None, True):
        expect_raises(
            InvalidRequest,
            f"scan(limit={bad!r})",
            lambda b=bad: storage.scan("c", "LIVE", limit=b),  # type: ignore[misc]
        )


@register
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
                expect(len(page.items) <= limit, f"filtered scan exceeded limit={limit}")
                got.extend(item["_id"] for item in page.items if flt(item))
                if page.cursor is None:
                    break
                expect(after is None or page.cursor > after, "filtered scan cursor went back")
                after = page.cursor
            else:
                raise ConformanceError("a filtered scan never finished")
            expect(
                got == expected,
                f"filtered scan (limit={limit}, {flt.__name__}) accepted {got}, "
                f"expected {expected}",
            )
        found = ids_of(list(storage.find("c", "LIVE", flt)))
        expect(found == expected, f"find with {flt.__name__} returned {found}")


@register
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
        expect(isinstance(result, Count), f"count must return a Count, got {result!r}")
        expect(isinstance(result.value, int) and result.value >= 0, f"bad count {result!r}")
        if result.exact:
            expect(result.value == expected, f"exact count is {result.value}, expected {expected}")
    sandbox = storage.count("c", "SANDBOX")
    expect(not sandbox.exact or sandbox.value == 0, f"empty SANDBOX counted {sandbox!r}")
