"""``MemoryStorage.change_matching`` against the reference ``change_by_scan``.

Two copies of one random store: batch after batch (random filters in both dialects,
random limits and cursors, every built-in change kind and changes whose results are
refused or cannot be stored), the set-based batch on one copy and the reference on the
other must give equal results and leave identical items (compared by ``repr``, so
``-0.0``, ``True`` against ``1``, key order and date offsets count). Inside ``atomic()``
a failed block undoes a set-based batch, and readers see it only once the block ends.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.errors import InvalidItem
from taskengine.filters import compile_filter
from taskengine.storage import MemoryStorage
from taskengine.storage.base import ItemFilter
from taskengine.storage.changes import ChangeResult, ChangingStorage, ItemChange, change_by_scan
from taskengine.storage.codec import admit
from taskengine.tasktypes._changes import (
    DELETE_MATCHED,
    CopyField,
    EditField,
    RemoveFields,
    SetField,
)
from taskengine.tasktypes._fieldops import Operations, ReplaceItem, compile_edit
from tests.strategies import KEYS, documents, json_values, mongo_specs, texts, wix_specs

FIELDS = [*KEYS, "tags", "name", "new"]
"""Field names of the changes: the items' keys and one no item has."""

WORDS = st.sampled_from(["a", "b", "c"])

docs_strategy = st.builds(
    lambda doc, extra: {**extra, **doc},
    documents,
    st.fixed_dictionaries(
        {"tags": st.one_of(st.lists(WORDS, min_size=1, max_size=3), json_values(max_leaves=3))},
        optional={
            "name": st.sampled_from(["0003", "0006", "0100", "x"]),
            "_publishStatus": st.sampled_from(["DRAFT", "PUBLISHED"]),
        },
    ),
)
"""Documents with random fields, a tags field (mostly an array of words), a name that
is another item's ``_id`` and a publish status."""

WHEN = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))


@attrs.frozen
class SetRaw:
    """A test change: set ``field`` to ``value`` as it is (maybe unstorable), or refuse
    items whose ``field`` holds ``refuse``."""

    field: str
    value: Any
    refuse: Any = None
    deletes: bool = attrs.field(default=False, init=False)
    needs_ids: bool = attrs.field(default=True, init=False)

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """The item with the value set, the refusal, or None when it holds the value."""
        if self.refuse is not None and item.get(self.field) == self.refuse:
            return f"{self.field} holds {self.refuse!r}"
        if repr(item.get(self.field)) == repr(self.value):
            return None
        item[self.field] = self.value
        return item

    def to_sql(self, backend: str, document: str) -> None:
        """No SQL form."""
        return None


def _stored(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The item as stored (normalised), or None when it cannot be stored."""
    try:
        return admit(doc)[1]
    except InvalidItem:
        return None


def _items(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for number, doc in enumerate(docs):
        stored = _stored({**doc, "_id": f"{number * 3:04d}"})
        if stored is not None:
            out.append(stored)
    return out


_values = json_values(max_leaves=4).filter(lambda v: _stored({"_id": "x", "v": v}) is not None)

_operations = st.builds(
    Operations,
    add_items=st.lists(st.one_of(WORDS, _values), max_size=2),
    remove_items=st.lists(st.one_of(WORDS, _values), max_size=2),
    replace_items=st.lists(st.builds(ReplaceItem, WORDS, st.one_of(WORDS, _values)), max_size=2),
    remove_duplicates=st.booleans(),
)


def _edit(field: str, ops: Operations) -> EditField:
    return EditField(field, ops, compile_edit(field, ops))


_change_kinds: list[st.SearchStrategy[ItemChange]] = [
    st.just(DELETE_MATCHED),
    st.builds(CopyField, st.sampled_from(FIELDS), st.sampled_from(FIELDS)),
    st.builds(
        SetField,
        st.sampled_from(["_publishStatus", *FIELDS]),
        st.one_of(st.sampled_from(["DRAFT", "PUBLISHED"]), texts, st.just(WHEN)),
        needs_ids=st.booleans(),
    ),
    st.builds(RemoveFields, st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2).map(tuple)),
    st.builds(_edit, st.sampled_from(FIELDS), _operations),
    # Elements replaced in place: the array keeps its length.
    st.builds(
        _edit,
        st.just("tags"),
        st.builds(
            Operations,
            replace_items=st.lists(st.builds(ReplaceItem, WORDS, WORDS), min_size=1, max_size=2),
        ),
    ),
    st.builds(
        SetRaw,
        st.sampled_from(FIELDS),
        st.one_of(_values, st.lists(WORDS, max_size=3), st.just(-0.0)),
        st.one_of(st.none(), texts, WORDS),
    ),
    # Results that cannot be stored (InvalidItem) or need normalising.
    st.builds(
        SetRaw,
        st.sampled_from(FIELDS),
        st.sampled_from(
            [
                math.nan,
                "\ud800",
                ["a", "\udfff"],
                2**63,
                {"k": [math.inf]},
                {"$date": "x"},
                {"$date": "2030-01-01T00:00:00Z"},
            ]
        ),
    ),
    # A change of ``_id``: the result names another item (written there, or missing).
    st.builds(CopyField, st.sampled_from(["name", *KEYS]), st.just("_id")),
]
changes: st.SearchStrategy[ItemChange] = st.sampled_from(_change_kinds).flatmap(lambda kind: kind)
"""Every kind of change, each about as likely."""

filters: st.SearchStrategy[ItemFilter | None] = st.one_of(
    st.none(),
    st.none(),
    mongo_specs(depth=1).map(lambda spec: compile_filter(spec, "mongo")),
    wix_specs(depth=1).map(lambda spec: compile_filter(spec, "wix")),
)


def _store(items: list[dict[str, Any]]) -> MemoryStorage:
    storage = MemoryStorage()
    storage.create_collection("c", sandbox=True)
    storage.insert_items("c", "SANDBOX", items)
    return storage


def _state(storage: MemoryStorage) -> list[str]:
    return [repr(item) for item in storage.find("c", "SANDBOX")]


def _batch(
    storage: MemoryStorage,
    set_based: bool,
    after: str | None,
    limit: int,
    filter: ItemFilter | None,
    change: ItemChange,
) -> ChangeResult | str:
    """One batch inside ``atomic()``: its result, or the error it raised."""
    try:
        with storage.atomic():
            if set_based:
                return storage.change_matching(
                    "c", "SANDBOX", after=after, limit=limit, filter=filter, change=change
                )
            return change_by_scan(
                storage, "c", "SANDBOX", after=after, limit=limit, filter=filter, change=change
            )
    except InvalidItem as exc:
        return f"InvalidItem: {exc}"


@settings(max_examples=200)
@given(
    docs=st.lists(docs_strategy, max_size=14),
    filter=filters,
    batches=st.lists(st.tuples(changes, st.integers(1, 6)), min_size=1, max_size=5),
    start=st.one_of(st.none(), st.none(), st.sampled_from(["", "0000", "0004", "0010", "9"])),
)
def test_change_matching_equals_change_by_scan(
    docs: list[dict[str, Any]],
    filter: ItemFilter | None,
    batches: list[tuple[ItemChange, int]],
    start: str | None,
) -> None:
    items = _items(docs)
    reference, subject = _store(items), _store(items)
    after = None if start == "" else start
    for change, limit in batches:
        expected = _batch(reference, False, after, limit, filter, change)
        got = _batch(subject, True, after, limit, filter, change)
        assert got == expected
        assert _state(subject) == _state(reference)
        subject._check()
        if isinstance(got, ChangeResult):
            after = got.cursor


def test_memory_storage_is_a_changing_storage() -> None:
    assert isinstance(MemoryStorage(), ChangingStorage)
    assert MemoryStorage.change_matching is not None


def _edit_tags() -> EditField:
    return _edit("tags", Operations(add_items=("sale",)))


def test_a_refused_result_leaves_the_batch_unwritten() -> None:
    items = [{"_id": f"{i:03d}", "n": i} for i in range(10)]
    storage = _store(items)
    before = _state(storage)
    poison = SetRaw("n", math.nan)
    with pytest.raises(InvalidItem), storage.atomic():
        storage.change_matching("c", "SANDBOX", after=None, limit=10, filter=None, change=poison)
    assert _state(storage) == before
    # Outside a block too: the bad result is found before anything is written.
    with pytest.raises(InvalidItem):
        storage.change_matching("c", "SANDBOX", after=None, limit=10, filter=None, change=poison)
    assert _state(storage) == before


def test_rollback_undoes_a_set_based_batch_and_readers_see_it_only_when_committed() -> None:
    items = [{"_id": f"{i:03d}", "tags": ["a"] if i % 2 else "no"} for i in range(40)]
    storage = _store(items)
    before = _state(storage)
    seen: list[list[str]] = []

    def read() -> None:
        seen.append(_state(storage))

    class Boom(Exception):
        pass

    def batches() -> None:
        with storage.atomic():
            result = storage.change_matching(
                "c", "SANDBOX", after=None, limit=25, filter=None, change=_edit_tags()
            )
            assert result.written == 12
            assert len(result.refused) == 13
            deleted = storage.change_matching(
                "c", "SANDBOX", after=result.cursor, limit=100, filter=None, change=DELETE_MATCHED
            )
            assert deleted.written == 15
            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=30)
            assert seen == [before]  # another thread sees the last committed state
            raise Boom

    with pytest.raises(Boom):
        batches()
    assert _state(storage) == before
    storage._check()
    with storage.atomic():
        result = storage.change_matching(
            "c", "SANDBOX", after=None, limit=100, filter=None, change=_edit_tags()
        )
    assert result.written == 20
    assert storage.get_item("c", "SANDBOX", "001") == {"_id": "001", "tags": ["a", "sale"]}
    assert storage.get_item("c", "SANDBOX", "000") == {"_id": "000", "tags": "no"}


def test_results_are_private_copies() -> None:
    storage = _store([{"_id": "a", "tags": ["x"], "deep": {"list": [[1]]}}])
    kept: list[dict[str, Any]] = []

    def keep(item: dict[str, Any], /) -> dict[str, Any]:
        item["tags"].append("y")
        kept.append(item)
        return item

    @attrs.frozen
    class Keep:
        deletes: bool = False
        needs_ids: bool = True

        def __call__(self, item: dict[str, Any], /) -> dict[str, Any]:
            return keep(item)

        def to_sql(self, backend: str, document: str) -> None:
            return None

    storage.change_matching("c", "SANDBOX", after=None, limit=5, filter=None, change=Keep())
    kept[0]["tags"].append("z")
    kept[0]["deep"]["list"][0].append(2)
    assert storage.get_item("c", "SANDBOX", "a") == {
        "_id": "a",
        "tags": ["x", "y"],
        "deep": {"list": [[1]]},
    }


def test_bad_arguments_are_typed_errors() -> None:
    from taskengine.errors import CollectionNotFound, InvalidRequest, SandboxNotEnabled

    storage = MemoryStorage()
    storage.create_collection("c")
    with pytest.raises(CollectionNotFound):
        storage.change_matching(
            "x", "LIVE", after=None, limit=5, filter=None, change=DELETE_MATCHED
        )
    with pytest.raises(SandboxNotEnabled):
        storage.change_matching(
            "c", "SANDBOX", after=None, limit=5, filter=None, change=DELETE_MATCHED
        )
    with pytest.raises(InvalidRequest):
        storage.change_matching(
            "c", "LIVE", after=None, limit=0, filter=None, change=DELETE_MATCHED
        )


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        "\ud800",
        ["a", "\udfff"],
        2**63,
        -(2**63) - 1,
        {"k": [math.inf]},
        {"$date": "x"},
        object(),
        ("a",),
        {1: "a"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("field", ["tags", "new"])
def test_every_new_value_is_checked(value: Any, field: str) -> None:
    # Enough items that the later ones go through the compiled per-shape path.
    items = [{"_id": f"{i:03d}", "tags": ["a"], "n": i} for i in range(5)]
    storage = _store(items)
    storage.change_matching(  # registers the shape with ``new`` (a stored value)
        "c", "SANDBOX", after="003", limit=1, filter=None, change=SetRaw(field, "ok")
    )
    before = _state(storage)
    with pytest.raises(InvalidItem):
        storage.change_matching(
            "c", "SANDBOX", after=None, limit=3, filter=None, change=SetRaw(field, value)
        )
    assert _state(storage) == before


@pytest.mark.parametrize(
    "value",
    [
        {"$date": "2030-01-01T00:00:00Z"},
        datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-3))),
        -0.0,
        True,
        2**63 - 1,
        {"a": [1, {"b": []}], "c": {}},
        [[], [1.5, None], {"x": "y"}],
        "é\u0000",
    ],
    ids=repr,
)
@pytest.mark.parametrize("field", ["tags", "n", "new"])
def test_stored_values_equal_the_reference(value: Any, field: str) -> None:
    items = [{"_id": f"{i:03d}", "tags": ["a"], "n": i} for i in range(5)]
    reference, subject = _store(items), _store(items)
    change = SetRaw(field, value)
    for after in ("003", None):  # the first registers the result's shape
        expected = _batch(reference, False, after, 5, None, change)
        assert _batch(subject, True, after, 5, None, change) == expected
        assert _state(subject) == _state(reference)
    subject._check()


def test_a_result_with_another_id_is_written_there_or_missing() -> None:
    items = [{"_id": f"{i:03d}", "name": name} for i, name in enumerate(["002", "zzz", "x"])]
    reference, subject = _store(items), _store(items)
    copy = CopyField("name", "_id")
    expected = _batch(reference, False, None, 2, None, copy)
    assert expected == ChangeResult("001", 1, ("002",), missing=("zzz",))
    assert _batch(subject, True, None, 2, None, copy) == expected
    assert _state(subject) == _state(reference)


class _Key(str):
    """A ``str`` subclass: a key that is not exactly a ``str``."""


@attrs.frozen
class _SubclassKeys:
    """A test change: the same item with its keys turned into ``_Key`` (equal to them)."""

    deletes: bool = False
    needs_ids: bool = True

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any]:
        """The item with ``_Key`` keys but ``_id``."""
        return {key if key == "_id" else _Key(key): value for key, value in item.items()}

    def to_sql(self, backend: str, document: str) -> None:
        """No SQL form."""
        return None


def test_keys_that_are_not_exactly_str_go_the_general_way() -> None:
    items = [{"_id": f"{i:03d}", "tags": ["a"], "n": i} for i in range(5)]
    reference, subject = _store(items), _store(items)
    expected = _batch(reference, False, None, 5, None, _SubclassKeys())
    assert _batch(subject, True, None, 5, None, _SubclassKeys()) == expected
    assert _state(subject) == _state(reference)
    subject._check()


def test_without_room_for_compiled_refreezers_results_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskengine.storage import _memchange

    monkeypatch.setattr(_memchange, "_REFREEZERS", {})
    monkeypatch.setattr(_memchange, "_MAX_REFREEZERS", 0)
    items = [{"_id": f"{i:03d}", "tags": ["a", "b"][: i % 3], "n": i} for i in range(30)]
    reference, subject = _store(items), _store(items)
    for change in (_edit_tags(), CopyField("n", "m"), SetField("tags", "x"), DELETE_MATCHED):
        expected = _batch(reference, False, "004", 10, None, change)
        assert _batch(subject, True, "004", 10, None, change) == expected
        assert _state(subject) == _state(reference)
    assert not _memchange._REFREEZERS


@pytest.mark.parametrize("set_based", [True, False], ids=["change_matching", "replace_items"])
def test_new_frozen_items_do_not_pile_up_in_the_youngest_generation(set_based: bool) -> None:
    # Replacing items frees as many tracked objects as it makes, so the collector's own
    # count never triggers; the store collects the youngest generation itself.
    import gc

    items = [{"_id": f"{i:06d}", "tags": ["a", "b"], "n": i} for i in range(40_000)]
    storage = _store(items)
    del items
    gc.collect()
    change = _edit_tags()
    after: str | None = None
    largest = 0
    while True:
        result = _batch(storage, set_based, after, 500, None, change)
        assert isinstance(result, ChangeResult)
        largest = max(largest, len(gc.get_objects(generation=0)))
        if result.cursor is None:
            break
        after = result.cursor
    assert storage.get_item("c", "SANDBOX", "039999") == {
        "_id": "039999",
        "tags": ["a", "b", "sale"],
        "n": 39999,
    }
    assert largest < 15_000


def test_a_subclass_overriding_scan_or_writes_loses_the_capability() -> None:
    class Scanning(MemoryStorage):
        def scan(self, *args: Any, **kwargs: Any) -> Any:
            return super().scan(*args, **kwargs)

    class Replacing(MemoryStorage):
        def replace_items(self, *args: Any, **kwargs: Any) -> Any:
            return super().replace_items(*args, **kwargs)

    class Deleting(Replacing):
        def change_matching(self, *args: Any, **kwargs: Any) -> Any:
            return MemoryStorage.change_matching(self, *args, **kwargs)  # its own: kept

    class Reading(MemoryStorage):
        def get_item(self, *args: Any, **kwargs: Any) -> Any:
            return super().get_item(*args, **kwargs)

    assert Scanning.change_matching is None
    assert Replacing.change_matching is None
    assert Deleting.change_matching is not None
    assert Reading.change_matching is MemoryStorage.change_matching


def test_a_result_nested_too_deep_is_an_invalid_item() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    storage = _store([{"_id": f"{i:03d}", "tags": ["a"]} for i in range(4)])
    before = _state(storage)

    class SetDeep:
        deletes = False
        needs_ids = True

        def __call__(self, item: dict[str, Any], /) -> dict[str, Any]:
            item["tags"] = deep
            return item

        def to_sql(self, backend: str, document: str) -> None:
            return None

    with pytest.raises(InvalidItem):
        storage.change_matching("c", "SANDBOX", after=None, limit=4, filter=None, change=SetDeep())
    assert _state(storage) == before
