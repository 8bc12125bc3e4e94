"""Hypothesis laws: MemoryStorage and SQLiteStorage agree, values round-trip, pages tile."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.errors import InvalidItem
from taskengine.storage import MemoryStorage, SQLiteStorage
from taskengine.storage.base import Storage
from taskengine.testing import agreement_machine, same_value

StorageAgreement = agreement_machine(lambda: SQLiteStorage(":memory:"))
StorageAgreement.TestCase.settings = settings(
    StorageAgreement.TestCase.settings, stateful_step_count=25
)
TestMemoryAndSQLiteAgree = StorageAgreement.TestCase
TestMemoryAndSQLiteAgree.__doc__ = "The same random operations on both adapters give equal results."

_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_dates = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)) | st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    ),
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=_SURROGATES))
    | _dates
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(blacklist_categories=_SURROGATES), max_size=4), inner, max_size=4
        )
    ),
    max_leaves=12,
)
_ids = st.text(st.characters(blacklist_categories=_SURROGATES), min_size=1, max_size=6)


ADAPTERS = pytest.mark.parametrize("adapter", ["memory", "sqlite"])


def _make(kind: str) -> Storage:
    return MemoryStorage() if kind == "memory" else SQLiteStorage(":memory:")


def _close(storage: Storage) -> None:
    if isinstance(storage, SQLiteStorage):
        storage.close()


@ADAPTERS
@given(doc=st.dictionaries(st.text(max_size=5).filter(lambda k: k != "_id"), _values, max_size=5))
def test_values_round_trip_exactly(adapter: str, doc: dict[str, Any]) -> None:
    """Every storable value comes back with the same type, key order and date form."""
    storage = _make(adapter)
    try:
        item = {"_id": "x", **doc}
        try:
            storage.create_collection("c")
            storage.insert_items("c", "LIVE", [item])
        except InvalidItem:
            # only refused for a lone surrogate somewhere in a key
            assert any(not _encodable(key) for key in _keys(doc))
            return
        assert same_value(storage.get_item("c", "LIVE", "x"), item)
        assert same_value(storage.scan("c", "LIVE").items, [item])
    finally:
        _close(storage)


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@ADAPTERS
@given(ids=st.sets(_ids, max_size=30), limit=st.integers(min_value=1, max_value=8))
def test_pages_tile_the_sorted_ids(adapter: str, ids: set[str], limit: int) -> None:
    """Paging with any limit yields every id once, in Python str order."""
    storage = _make(adapter)
    try:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": i} for i in ids])
        seen: list[str] = []
        after = None
        while True:
            page = storage.scan("c", "LIVE", after=after, limit=limit)
            assert len(page.items) <= limit
            seen.extend(item["_id"] for item in page.items)
            if page.cursor is None:
                break
            after = page.cursor
        assert seen == sorted(ids)
    finally:
        _close(storage)


@ADAPTERS
@given(
    stored=st.sets(_ids, max_size=15),
    batch=st.lists(_ids, max_size=15),
)
def test_write_results_partition_the_batch(
    adapter: str, stored: set[str], batch: list[str]
) -> None:
    """replace/delete report each distinct id once: done if it was stored, else missing."""
    storage = _make(adapter)
    try:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": i} for i in stored])
        distinct = list(dict.fromkeys(batch))
        replaced = storage.replace_items("c", "LIVE", [{"_id": i, "r": 1} for i in batch])
        assert replaced.done == tuple(i for i in distinct if i in stored)
        assert replaced.missing == tuple(i for i in distinct if i not in stored)
        deleted = storage.delete_items("c", "LIVE", batch)
        assert deleted == replaced
        left = [item["_id"] for item in storage.find("c", "LIVE")]
        assert left == sorted(stored - set(batch))
    finally:
        _close(storage)


class _ReversedPages(MemoryStorage):
    """A broken adapter: each scan page comes back in descending order."""

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        """The page, reversed."""
        page = super().scan(*args, **kwargs)
        page.items.reverse()
        return page


def test_agreement_machine_catches_a_broken_adapter() -> None:
    """The agreement machine fails when an adapter disagrees with the reference."""
    from hypothesis import Phase
    from hypothesis.stateful import run_state_machine_as_test

    machine = agreement_machine(_ReversedPages)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=300,
                stateful_step_count=25,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                report_multiple_bugs=False,
            ),
        )


_maybe_bad = st.recursive(
    _scalars
    | st.sampled_from([float("nan"), 2**63, (1,), {"$date": "x"}, {1: 2}, "\ud800", b""])
    | st.builds(lambda s: {"$date": s}, st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01"])),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(doc=st.dictionaries(st.text(max_size=3), _maybe_bad, max_size=4), item_id=_ids | st.none())
def test_fast_encoding_matches_admit(doc: dict[str, Any], item_id: str | None) -> None:
    """admit_text gives exactly encode(admit(item)), or the same InvalidItem."""
    from taskengine.storage.codec import admit, admit_text, encode

    item = dict(doc) if item_id is None else {"_id": item_id, **doc}
    try:
        expected: object = encode(admit(item)[1])
    except InvalidItem as exc:
        expected = str(exc)
    try:
        got: object = admit_text(item)[1]
    except InvalidItem as exc:
        got = str(exc)
    assert got == expected


@given(doc=st.dictionaries(st.text(max_size=3), _maybe_bad, max_size=4), item_id=_ids | st.none())
def test_fast_admission_matches_admit(doc: dict[str, Any], item_id: str | None) -> None:
    """admit_entry gives admit's copy and plan, or the same InvalidItem; copies are private."""
    from taskengine.storage.codec import copy_planned

    item = dict(doc) if item_id is None else {"_id": item_id, **doc}
    admitted = _admitted_alike(item)
    if admitted is None:
        return
    got, plan = admitted
    copy = copy_planned(got, plan)
    assert same_value(copy, got)
    assert _containers(copy).isdisjoint(_containers(got) | _containers(item))


class _Text(str):
    """A str subclass: never stored as it is."""


class _FixedZone(tzinfo):
    """A tzinfo that is not a datetime.timezone: normalised on the way in."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


_shape_values = _maybe_bad | st.sampled_from(
    [_Text("x"), True, datetime(2024, 1, 1, tzinfo=_FixedZone()), [1, "\ud800"], ["a", 2]]
)
_BAD_OF_TYPE: dict[type, list[Any]] = {
    str: ["\ud800", _Text("x"), "é"],
    int: [2**63, -(2**63) - 1, True, 1.5],
    float: [float("nan"), float("inf"), 1],
    bool: [1, float("nan"), 2**64],
    type(None): [0, (1,), "\ud800"],
    datetime: [datetime(2024, 1, 1, tzinfo=_FixedZone()), "2024"],
    list: [[1, "\ud800"], [{"$date": "2024-01-01"}], ("a",), {}],
    dict: [{"$date": "2024-01-01"}, {1: 2}, {"a": float("nan")}, []],
}


_shape_firsts = st.sampled_from(  # one kind per value, each kind as likely as the next
    [
        st.text(max_size=3),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        _dates,
        st.lists(_scalars, max_size=3),
        st.dictionaries(st.text(max_size=2), _scalars, max_size=3),
        _shape_values,
    ]
).flatmap(lambda kind: kind)


@given(
    keys=st.lists(st.text(max_size=2), unique=True, min_size=1, max_size=4)
    | st.lists(st.text(max_size=2) | st.integers(0, 2), unique=True, max_size=4),
    data=st.data(),
)
def test_shape_checkers_agree_with_admit(keys: list[Any], data: st.DataObject) -> None:
    """Items sharing keys but not values: each is judged exactly as admit judges it.

    The first item of a key tuple compiles that shape's checker; the next ones keep the
    keys (sometimes one as an equal str subclass, which must be refused) and put other
    values under them (often a refused value of the same type), and must still get
    admit's copy and plan, or its error.
    """
    from taskengine.storage import _shapes
    from taskengine.storage.codec import admit

    _shapes._SHAPES.clear()  # the first item below compiles the checker
    first = data.draw(st.lists(_shape_firsts, min_size=len(keys), max_size=len(keys)))
    items = [first]
    for _ in range(3):
        items.append(
            [
                data.draw(
                    st.sampled_from(_BAD_OF_TYPE.get(type(value), [None]))
                    if data.draw(st.booleans())
                    else _shape_values
                )
                for value in first
            ]
        )
    for number, values in enumerate(items):
        names = list(keys)
        if number and names and data.draw(st.booleans()):  # a str subclass equal to a key
            where = data.draw(st.integers(0, len(names) - 1))
            if type(names[where]) is str:
                names[where] = _Text(names[where])
        item = {"_id": "x", **dict(zip(names, values, strict=True))}
        admitted = _admitted_alike(item)
        if admitted is not None:
            assert _zone_types(admitted[0]) == _zone_types(admit(item)[1])  # normalised alike


def _zone_types(value: Any) -> list[type]:
    """The types of the tzinfo of every datetime inside value, in order."""
    if type(value) is dict:
        value = list(value.values())
    if type(value) is list:
        return [kind for inner in value for kind in _zone_types(inner)]
    return [type(value.tzinfo)] if type(value) is datetime else []


def _admitted_alike(item: dict[Any, Any]) -> tuple[Any, Any] | None:
    """Assert admit_entry(item) agrees with admit(item); its (copy, plan), or None if refused.

    Agreeing means the same InvalidItem message, or the same id, an equal value and the
    plan of admit's copy.
    """
    from taskengine.storage.codec import admit, admit_entry, plan_of

    try:
        expected_id, expected = admit(item)
    except InvalidItem as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        with pytest.raises(InvalidItem) as raised:
            admit_entry(item)
        assert str(raised.value) == message
        return None
    got_id, (got, plan) = admit_entry(item)
    assert got_id == expected_id
    assert same_value(got, expected)
    assert plan == plan_of(expected)
    return got, plan


def _containers(value: Any) -> set[int]:
    """The ids of every dict and list inside value (value included)."""
    if type(value) is dict:
        return {id(value)}.union(*map(_containers, value.values()))
    if type(value) is list:
        return {id(value)}.union(*map(_containers, value))
    return set()


def test_memory_scan_skips_tombstones_and_revives_ids() -> None:
    """After deletes (tombstones) and re-inserts, MemoryStorage pages like a fresh store."""
    storage = MemoryStorage()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"{n:03d}", "n": n, "l": [[n]]} for n in range(90)])
    doomed = [f"{n:03d}" for n in range(90) if n < 20 or n % 3 == 0]
    assert storage.delete_items("c", "LIVE", doomed).missing == ()
    storage._check()
    storage.insert_items("c", "LIVE", [{"_id": "003", "back": True}, {"_id": "zzz"}])
    storage._check()
    alive = [n for n in range(90) if not (n < 20 or n % 3 == 0)]
    expected = ["003", *[f"{n:03d}" for n in alive], "zzz"]
    for limit in (1, 7, 1000):
        seen: list[str] = []
        after: str | None = None
        while True:
            page = storage.scan("c", "LIVE", after=after, limit=limit)
            assert len(page.items) <= limit
            seen.extend(item["_id"] for item in page.items)
            if page.cursor is None:
                break
            assert page.cursor == seen[-1]
            after = page.cursor
        assert seen == expected
    odd = storage.scan("c", "LIVE", limit=5, filter=lambda doc: doc.get("n", 0) % 2 == 1)
    assert [item["_id"] for item in odd.items] == ["023", "025"]
    assert odd.cursor == "025"
    copy = storage.get_item("c", "LIVE", "020")
    assert copy is not None
    copy["l"][0].append(1)
    assert storage.get_item("c", "LIVE", "020") == {"_id": "020", "n": 20, "l": [[20]]}
    storage.delete_items("c", "LIVE", [f"{n:03d}" for n in alive])
    storage._check()
    assert [item["_id"] for item in storage.find("c", "LIVE")] == ["003", "zzz"]


@ADAPTERS
def test_delete_takes_any_iterable_and_refuses_str_subclass_ids(adapter: str) -> None:
    """Ids may come from a generator; an id that is not exactly a str is refused first."""
    storage = _make(adapter)
    try:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a"}, {"_id": "b"}, {"_id": "c"}])
        with pytest.raises(InvalidItem):
            storage.delete_items("c", "LIVE", ["a", _Text("b")])
        assert storage.count("c", "LIVE").value == 3  # nothing deleted
        result = storage.delete_items("c", "LIVE", (i for i in ["a", "zz", "a"]))
        assert (result.done, result.missing) == (("a",), ("zz",))
        assert [item["_id"] for item in storage.find("c", "LIVE")] == ["b", "c"]
    finally:
        _close(storage)


@ADAPTERS
def test_too_deep_an_item_is_invalid_not_a_recursion_error(adapter: str) -> None:
    """An item nested past the recursion limit is refused with InvalidItem; nothing stored."""
    deep: dict[str, Any] = {"x": 1}
    for _ in range(5000):
        deep = {"a": deep}
    storage = _make(adapter)
    try:
        storage.create_collection("c")
        with pytest.raises(InvalidItem, match="nested too deeply"):
            storage.insert_items("c", "LIVE", [{"_id": "a", "v": deep}])
        assert storage.count("c", "LIVE").value == 0
    finally:
        _close(storage)


@ADAPTERS
@pytest.mark.parametrize(
    "offset",
    [timedelta(microseconds=1), timedelta(microseconds=-1), timedelta(seconds=1, microseconds=5)],
)
def test_dates_with_fractional_offsets_round_trip(adapter: str, offset: timedelta) -> None:
    """An offset with seconds or microseconds comes back as it was (Python 3.11's
    ``fromisoformat`` alone would read ``+00:00:00.000001`` as UTC, moving the instant)."""
    storage = _make(adapter)
    try:
        moment = datetime(2020, 1, 1, tzinfo=timezone(offset))
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "x", "d": moment}])
        back = storage.get_item("c", "LIVE", "x")["d"]
        assert (back, back.utcoffset()) == (moment, offset)
    finally:
        _close(storage)
