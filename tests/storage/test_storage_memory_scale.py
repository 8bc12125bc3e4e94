"""MemoryStorage at scale: stored items stay out of the garbage collector's way, the
chunked sorted map agrees with a plain dict, frozen items round-trip exactly, and long
reads do not hold the lock other threads need."""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.errors import InvalidItem
from taskengine.storage import MemoryStorage
from taskengine.storage import _chunks as chunks_module
from taskengine.storage._chunks import ChunkedItems
from taskengine.storage._frozen import freeze_item, thaw_item
from taskengine.storage.codec import admit, plan_of
from tests.strategies import items as item_strategy

WAIT = 30.0  # bounded waits: only reached when the behaviour under test is broken


def _item(i: int) -> dict[str, Any]:
    """Items of several shapes: flat lists, nested dicts and lists, dates, empties."""
    kind = i % 5
    base: dict[str, Any] = {"_id": f"{i:07d}", "n": i, "name": f"item {i}"}
    if kind == 0:
        base["tags"] = ["a", "b", str(i)]
    elif kind == 1:
        base["nested"] = {"list": [1, 2.5, {"deep": [True, None]}], "empty": {}}
    elif kind == 2:
        base["when"] = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2)))
        base["rows"] = [[1, 2], [], ["x"]]
    elif kind == 3:
        base["tags"] = []
        base["f"] = -0.0
    return base


def _stored(storage: MemoryStorage, collection: str) -> Iterator[Any]:
    """Every frozen item and every chunk tuple of a collection's live set (internals)."""
    items = storage._collections[collection].live
    for chunk in items.snapshot():
        yield chunk
        yield from chunk
    yield from items._keys


def _tracked_objects() -> int:
    """Tracked objects after enough full collections to untrack every frozen item.

    A tuple is untracked by a collection that finds its elements untracked; the
    collector may examine a tuple before the tuples inside it, so a frozen value nested
    k levels deep may take k collections (the items here nest at most 5 levels).
    """
    for _ in range(6):
        gc.collect()
    return len(gc.get_objects())


def test_stored_items_are_not_tracked_by_the_garbage_collector() -> None:
    """After a few collections no stored item, id chunk or item chunk is a tracked object,
    and 5,000 stored items (then all replaced) add far fewer tracked objects than items:
    a full collection's cost does not grow with the store."""
    storage = MemoryStorage()
    storage.create_collection("c")
    before = _tracked_objects()
    items = [_item(i) for i in range(5_000)]
    for start in range(0, len(items), 2_500):
        storage.insert_items("c", "LIVE", items[start : start + 2_500])
    del items
    after_insert = _tracked_objects()
    for start in range(0, 5_000, 500):
        after = None if start == 0 else f"{start - 1:07d}"
        page = storage.scan("c", "LIVE", after=after, limit=500)
        for doc in page.items:
            doc["extra"] = [doc["n"]]
        storage.replace_items("c", "LIVE", page.items)
    del page, doc  # the test's own copies
    after_replace = _tracked_objects()
    assert storage.count("c", "LIVE").value == 5_000
    # Three short lists of chunks per item set: about 3 * 5_000 / 512 references.
    assert after_insert - before < 500
    assert after_replace - before < 500
    untracked = [obj for obj in _stored(storage, "c") if gc.is_tracked(obj)]
    assert untracked == []
    storage._check()


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down, float signs and key order included."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is datetime:
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def _shares_container(a: Any, b: Any) -> bool:
    if type(a) is dict and type(b) is dict:
        return a is b or any(_shares_container(a[k], b[k]) for k in a if k in b)
    if type(a) is list and type(b) is list:
        return a is b or any(map(_shares_container, a, b))
    return False


@given(item_strategy)
def test_frozen_items_round_trip_exactly(raw: dict[str, Any]) -> None:
    """thaw(freeze(item)) is the item (types, float signs, key order, dates), made of fresh
    containers each time, and the frozen form is tuples only (no list or dict)."""
    try:
        _, doc = admit(raw)
    except InvalidItem:
        return
    frozen = freeze_item(doc, plan_of(doc))
    first, second = thaw_item(frozen), thaw_item(frozen)
    assert _same(first, doc)
    assert not _shares_container(first, doc)
    assert not _shares_container(first, second)

    def no_containers(value: Any) -> bool:
        if type(value) is tuple:
            return all(map(no_containers, value))
        return type(value) is not list and type(value) is not dict

    assert no_containers(frozen)


@contextmanager
def _small_chunks(load: int) -> Iterator[None]:
    saved = chunks_module._LOAD, chunks_module._SPLIT
    chunks_module._LOAD, chunks_module._SPLIT = load, 2 * load
    try:
        yield
    finally:
        chunks_module._LOAD, chunks_module._SPLIT = saved


_keys = st.integers(min_value=0, max_value=300).map(lambda n: f"k{n:03d}")
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.dictionaries(_keys, st.one_of(st.none(), _keys))),
        st.tuples(st.just("replace"), st.dictionaries(_keys, _keys)),
        # A task's batch: stored ids in order, some skipped (what a filter leaves out).
        st.tuples(st.just("replace stored"), st.lists(st.booleans(), min_size=1), _keys),
        st.tuples(st.just("page"), st.one_of(st.none(), _keys), st.integers(1, 40)),
    ),
    max_size=30,
)


@given(_ops, st.sampled_from([1, 2, 3, 8]))
def test_chunked_items_agree_with_a_dict(ops: list[tuple[Any, ...]], load: int) -> None:
    """Any sequence of writes (inserts, deletes), replaces and pages leaves the chunked map
    equal to a dict model, with its invariants, and pages and lookups answer as the
    model does (values stand in for frozen items)."""
    with _small_chunks(load):
        chunked = ChunkedItems()
        model: dict[str, Any] = {}
        for op in ops:
            if op[0] == "write":
                changes = {key: None if v is None else (v,) for key, v in op[1].items()}
                chunked.write(changes)
                for key, value in changes.items():
                    if value is None:
                        model.pop(key, None)
                    else:
                        model[key] = value
                chunked.check()
            elif op[0].startswith("replace"):
                if op[0] == "replace":
                    batch = {key: (value,) for key, value in op[1].items()}
                else:
                    mask, value = op[1], op[2]
                    stored = sorted(model)
                    chosen = [k for n, k in enumerate(stored) if mask[n % len(mask)]]
                    batch = dict.fromkeys(chosen, (value,))
                prior = chunked.replace(batch)
                assert prior == {key: model[key] for key in batch if key in model}
                model.update({key: batch[key] for key in prior})
                chunked.check()
            else:
                after, limit = op[1], op[2]
                ordered = sorted(key for key in model if after is None or key > after)
                page, cursor = chunked.page(after, limit)
                assert page == [model[key] for key in ordered[:limit]]
                assert cursor == (ordered[limit - 1] if len(ordered) > limit else None)
        assert len(chunked) == len(model)
        assert list(chunked.ids()) == sorted(model)
        assert [v for chunk in chunked.snapshot() for v in chunk] == [
            model[k] for k in sorted(model)
        ]
        for key in [f"k{n:03d}" for n in range(0, 302, 7)]:
            assert chunked.get(key) == model.get(key)


def test_rollback_restores_a_store_of_many_chunks() -> None:
    """An atomic block that inserts, replaces and deletes across many chunks (splits
    included) and then fails leaves exactly the items it started with."""
    storage = MemoryStorage()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [_item(i) for i in range(0, 6_000, 2)])
    before = list(storage.find("c", "LIVE"))

    def block() -> None:
        with storage.atomic():
            storage.insert_items("c", "LIVE", [_item(i) for i in range(1, 6_000, 2)])
            storage.replace_items("c", "LIVE", [dict(_item(i), n=-1) for i in range(0, 6_000, 3)])
            storage.delete_items("c", "LIVE", [f"{i:07d}" for i in range(0, 6_000, 5)])
            storage._check()
            assert storage.count("c", "LIVE").value == 6_000 - 1_200
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError, match="undo"):
        block()
    storage._check()
    after = list(storage.find("c", "LIVE"))
    assert len(after) == len(before)
    assert all(map(_same, after, before))


def _blocking_filter(
    started: threading.Event, reader_done: threading.Event
) -> tuple[Any, list[bool]]:
    """A filter that, on its first call, waits (bounded) until another thread has read
    and written the store; it records whether that happened."""
    seen: list[bool] = []

    def accept(doc: Mapping[str, Any]) -> bool:
        if not seen:
            started.set()
            seen.append(reader_done.wait(WAIT))
        return bool(doc["n"] % 2)

    return accept, seen


@pytest.mark.parametrize("call", ["count", "scan"])
def test_a_long_filtered_read_does_not_block_other_threads(call: str) -> None:
    """While a filtered count (a full pass) or scan is evaluating its filter, another
    thread reads and writes the same item set and finishes: the reader's filter runs
    without the storage lock. The count is of the items as they were when it started."""
    storage = MemoryStorage()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [_item(i) for i in range(4_000)])
    started, reader_done = threading.Event(), threading.Event()
    accept, seen = _blocking_filter(started, reader_done)
    results: list[Any] = []

    def other() -> None:
        if started.wait(WAIT):
            assert storage.get_item("c", "LIVE", "0000001") is not None
            storage.scan("c", "LIVE", limit=10)
            storage.insert_items("c", "LIVE", [_item(5_001)])
            storage.delete_items("c", "LIVE", ["0000003"])
            reader_done.set()

    thread = threading.Thread(target=other)
    thread.start()
    if call == "count":
        results.append(storage.count("c", "LIVE", accept).value)
    else:
        results.append(len(storage.scan("c", "LIVE", limit=4_000, filter=accept).items))
    thread.join(WAIT)
    assert not thread.is_alive()
    assert seen == [True]  # the other thread got through while the filter was running
    assert results == [2_000]  # odd n among the 4,000 items present when the read began
    assert storage.count("c", "LIVE").value == 4_000  # +5001, -0000003


def test_an_item_with_more_keys_than_a_shape_holds_round_trips() -> None:
    """An item of 100 keys (past the 64 a compiled thawer takes) is stored in the generic
    frozen form and comes back exactly, in key order, with fresh containers."""
    storage = MemoryStorage()
    storage.create_collection("c")
    item: dict[str, Any] = {"_id": "wide"}
    item.update({f"f{i}": [i, {"x": -0.0}] if i % 3 == 0 else i * 1.5 for i in range(99)})
    storage.insert_items("c", "LIVE", [item])
    first = storage.get_item("c", "LIVE", "wide")
    second = storage.get_item("c", "LIVE", "wide")
    assert _same(first, item)
    assert not _shares_container(first, second)
    assert not _shares_container(first, item)


def test_readers_do_not_wait_for_an_open_atomic_block() -> None:
    """While one thread holds an atomic() block open (its writes not yet committed),
    another thread's get_item, scan, count and find finish, and see the items as they
    were before the block; the block's own thread sees its writes; once the block ends,
    everyone sees them."""
    storage = MemoryStorage()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [_item(i) for i in range(3_000)])
    written, read_done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def reader() -> None:
        if written.wait(WAIT):
            seen["get"] = storage.get_item("c", "LIVE", "0000000")
            seen["scan"] = [doc["n"] for doc in storage.scan("c", "LIVE", limit=3).items]
            seen["count"] = storage.count("c", "LIVE").value
            seen["odd"] = storage.count("c", "LIVE", lambda doc: bool(doc["n"] % 2)).value
            seen["find"] = sum(1 for _ in storage.find("c", "LIVE"))
            read_done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with storage.atomic():
        storage.replace_items("c", "LIVE", [dict(_item(0), n=-7)])
        storage.delete_items("c", "LIVE", ["0000001", "0000002"])
        storage.insert_items("c", "LIVE", [_item(9_999)])
        own = storage.get_item("c", "LIVE", "0000000")
        own_count = storage.count("c", "LIVE").value
        written.set()
        finished = read_done.wait(WAIT)  # the reader cannot finish if reads need the lock
    thread.join(WAIT)
    assert finished
    assert own is not None
    assert own["n"] == -7
    assert own_count == 2_999
    assert seen["get"] == _item(0)
    assert seen["scan"] == [0, 1, 2]
    assert (seen["count"], seen["odd"], seen["find"]) == (3_000, 1_500, 3_000)
    after = storage.get_item("c", "LIVE", "0000000")
    assert after is not None
    assert after["n"] == -7
    assert storage.count("c", "LIVE").value == 2_999
    storage._check()
