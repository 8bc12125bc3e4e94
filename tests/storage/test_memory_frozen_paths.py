"""MemoryStorage's shortcuts on frozen items give what whole items give.

A compiled filter sees only the keys it names (``Filter.top_level_fields``), and a
change said as data (``FieldAssignment``) rewrites the frozen tuple: each is checked
here against the same storage driven by a filter or a change that cannot say either
(a plain function), so every item goes the general way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.filters import compile_filter
from taskengine.storage import MemoryStorage
from taskengine.storage.changes import ItemChange
from taskengine.tasktypes._changes import CopyField, EditField, SetField
from taskengine.tasktypes._fieldops import Operations
from tests.storage.test_memory_change import FIELDS, _items, docs_strategy
from tests.strategies import mongo_specs, wix_specs

_small = st.sampled_from([0, 1, "a", None, True])
_small_docs = st.dictionaries(st.sampled_from(["a", "b", "c", "tags"]), _small, max_size=4)
_small_specs = st.dictionaries(st.sampled_from(["a", "b", "c"]), _small, min_size=1, max_size=3)
_filters = st.one_of(
    mongo_specs(depth=2).map(lambda spec: compile_filter(spec, "mongo")),
    wix_specs(depth=2).map(lambda spec: compile_filter(spec, "wix")),
    # Several fields that small documents often hold: every key of a filter counts.
    _small_specs.map(lambda spec: compile_filter(spec, "wix")),
    st.lists(_small_specs, min_size=1, max_size=3).map(
        lambda specs: compile_filter({"$or": specs})
    ),
)


class _Whole:
    """A change with no ``assignment``: the storage must call it on whole items."""

    def __init__(self, change: ItemChange) -> None:
        self.change = change
        self.deletes = change.deletes
        self.needs_ids = True

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        return self.change(item)

    def to_sql(self, backend: str, document: str) -> None:
        return None


def _whole(filter: Any) -> Any:
    """The filter as a plain function: the storage must hand it whole items."""
    if filter is None:
        return None

    def whole(item: Mapping[str, Any]) -> bool:
        return bool(filter(item))

    return whole


def _store(items: list[dict[str, Any]]) -> MemoryStorage:
    storage = MemoryStorage()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", items)
    return storage


@settings(max_examples=300)
@given(
    docs=st.lists(st.one_of(docs_strategy, _small_docs), max_size=12),
    filter=_filters,
    limit=st.integers(1, 5),
)
def test_a_filter_on_frozen_items_accepts_what_it_accepts_on_whole_ones(
    docs: list[dict[str, Any]], filter: Any, limit: int
) -> None:
    storage = _store(_items(docs))
    everything = storage.scan("c", "LIVE", limit=100).items
    whole = _whole(filter)

    assert storage.scan("c", "LIVE", limit=100, filter=filter).items == [
        item for item in everything if filter(item)
    ]
    assert storage.count("c", "LIVE", filter) == storage.count("c", "LIVE", whole)
    after = None
    while True:  # page by page, as a scan path task reads
        fast = storage.scan("c", "LIVE", after=after, limit=limit, filter=filter)
        slow = storage.scan("c", "LIVE", after=after, limit=limit, filter=whole)
        assert fast == slow
        if fast.cursor is None:
            break
        after = fast.cursor


WHEN = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-3)))
_adds = st.lists(
    st.one_of(
        st.sampled_from(["a", "b", "sale"]),
        st.integers(-3, 3),
        st.sampled_from([None, True, 1.5, -0.0, WHEN]),
    ),
    min_size=1,
    max_size=3,
)
_assignments: st.SearchStrategy[ItemChange] = st.one_of(
    st.builds(
        SetField,
        st.sampled_from(["_publishStatus", *FIELDS]),
        st.sampled_from(["DRAFT", "a", WHEN]),
    ),
    st.builds(CopyField, st.sampled_from(FIELDS), st.sampled_from(FIELDS)),
    st.builds(
        lambda field, adds: EditField.of(field, Operations(add_items=adds)),
        st.sampled_from(["tags", *FIELDS]),
        _adds,
    ),
)


@settings(max_examples=300)
@given(
    docs=st.lists(docs_strategy, max_size=12),
    change=_assignments,
    filter=st.one_of(st.none(), _filters),
)
def test_a_change_said_as_data_writes_what_its_python_form_writes(
    docs: list[dict[str, Any]], change: ItemChange, filter: Any
) -> None:
    assert getattr(change, "assignment", None) is not None
    items = _items(docs)
    fast, slow = _store(items), _store(items)
    got = fast.change_matching("c", "LIVE", after=None, limit=100, filter=filter, change=change)
    expected = slow.change_matching(
        "c", "LIVE", after=None, limit=100, filter=_whole(filter), change=_Whole(change)
    )
    assert (got.written, got.unchanged, got.refused) == (
        expected.written,
        expected.unchanged,
        expected.refused,
    )
    assert sorted(got.done) == sorted(expected.done)
    stored, wanted = (
        fast.scan("c", "LIVE", limit=100).items,
        slow.scan("c", "LIVE", limit=100).items,
    )
    assert [repr(item) for item in stored] == [repr(item) for item in wanted]  # types, order, -0.0


def test_equal_values_that_are_not_identical_are_written() -> None:
    # ``1 == True == 1.0`` and key order: a copy or a set is unchanged only when identical.
    pairs: list[tuple[Any, Any]] = [
        (1, True),
        (1, 1.0),
        ([1], [True]),
        ({"x": 1, "y": 2}, {"y": 2, "x": 1}),
        (WHEN, WHEN.astimezone(timezone.utc)),
        ("DRAFT", "DRAFT"),
        ([1, "a"], [1, "a"]),
    ]
    items = [{"_id": f"{n:02d}", "a": a, "b": b} for n, (a, b) in enumerate(pairs)]
    for change in (CopyField("a", "b"), SetField("b", "DRAFT"), SetField("b", WHEN)):
        fast, slow = _store(items), _store(items)
        got = fast.change_matching("c", "LIVE", after=None, limit=100, filter=None, change=change)
        want = slow.change_matching(
            "c", "LIVE", after=None, limit=100, filter=None, change=_Whole(change)
        )
        assert (got.written, got.unchanged) == (want.written, want.unchanged)
        assert repr(fast.scan("c", "LIVE").items) == repr(slow.scan("c", "LIVE").items)
    # The pairs above are told apart: all but the last two are written by the copy.
    copied = _store(items).change_matching(
        "c", "LIVE", after=None, limit=100, filter=None, change=CopyField("a", "b")
    )
    assert (copied.written, copied.unchanged) == (5, 2)


def test_equal_assignments_that_are_not_identical_write_their_own_values() -> None:
    # Assigners are kept per assignment across batches: one made for ``1`` must not do
    # the work of ``True``, ``1.0`` or of the same instant at another offset.
    changes: list[ItemChange] = [
        EditField.of("tags", Operations(add_items=[1])),
        EditField.of("tags", Operations(add_items=[True])),
        EditField.of("tags", Operations(add_items=[1.0])),
        EditField.of("tags", Operations(add_items=[0.0])),
        EditField.of("tags", Operations(add_items=[-0.0])),
        SetField("when", WHEN),
        SetField("when", WHEN.astimezone(timezone.utc)),
        SetField("when", WHEN),
    ]
    items = [{"_id": f"{n:02d}", "tags": ["x"]} for n in range(3)]
    fast, slow = _store(items), _store(items)
    for change in changes:
        fast.change_matching("c", "LIVE", after=None, limit=100, filter=None, change=change)
        slow.change_matching("c", "LIVE", after=None, limit=100, filter=None, change=_Whole(change))
    stored = fast.scan("c", "LIVE").items
    assert repr(stored) == repr(slow.scan("c", "LIVE").items)
    assert repr(stored[0]["tags"]) == "['x', 1, True, 1.0, 0.0, -0.0]"
    assert stored[0]["when"].utcoffset() == WHEN.utcoffset()
