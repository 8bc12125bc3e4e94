"""PostgreSQL ``EDIT_FIELD_DATA`` set-based (:mod:`taskengine.storage._pgedit`): the text
splice equals the scan path.

Against a real server, as tests/storage/test_pg_update.py: each example stores the same
documents in two collections and runs the edit batch after batch, ``change_matching``
on one and :func:`change_by_scan` on the other; every batch's counters and the stored
texts must be equal, byte for byte. The arrays and operations mix what the splice does
(strings, booleans, ``null``) with what must go to Python or compare by value (numbers
with ``1 == 1.0``, one instant at two offsets, objects in two key orders, escaped
strings, U+0000), and documents repeat the field's pair in a nested object.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied, rows_left_to_python

from taskengine._values import values_equal
from taskengine.filters import compile_filter
from taskengine.storage import postgres as postgres_module
from taskengine.storage._pgedit import _plain_steps, edit_form, equality_key
from taskengine.storage.base import ItemFilter
from taskengine.storage.changes import ArrayEdit, ChangeResult, ItemChange, change_by_scan
from taskengine.storage.codec import admit
from taskengine.storage.postgres import PgDatabase, PostgresStorage
from taskengine.tasktypes._changes import EditField
from taskengine.tasktypes._fieldops import Operations, ReplaceItem


@pytest.fixture(autouse=True)
def set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables are never analyzed: without this every batch takes the scan path."""
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    """The module's database (its collections are emptied per example)."""
    return pg_module_database


_UTC = timezone.utc
_DATES = [
    datetime(2030, 1, 1, tzinfo=_UTC),
    datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),  # the same instant
    datetime(2030, 1, 1),  # naive: UTC, the same instant again
    datetime(2030, 1, 2, tzinfo=_UTC),
]
# Mostly what the splice does itself, so both sides of every row's choice are met.
_PLAIN = ["x", "y", "Goob", "", "é\U0001f600", "a,b", "x]", '"t":', True, False, None]
_ODD = [
    'q"',
    "b\\",
    "\x00",
    "x\n",
    0,
    1,
    1.0,
    -0.0,
    2.5,
    10**16,
    1e16,
    2**63 - 1,
    *_DATES,
    {"a": 1, "b": "x"},
    {"b": "x", "a": 1.0},
    [1],
    [1.0],
    ["x"],
    [],
    {},
]
elements = st.one_of(st.sampled_from(_PLAIN), st.sampled_from(_PLAIN), st.sampled_from(_ODD))
arrays = st.lists(elements, max_size=5)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document whose ``t`` is missing, ``null``, another value, or (mostly) an
    array; sometimes the same pair nested before or after it, or another key's copy."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["a"] = draw(elements)
    kind = draw(st.sampled_from(["array", "array", "array", "missing", "null", "other"]))
    if kind == "array":
        doc["t"] = draw(arrays)
    elif kind == "null":
        doc["t"] = None
    elif kind == "other":
        doc["t"] = draw(elements)
    if draw(st.booleans()):
        doc["z"] = draw(elements)
    if "t" in doc and draw(st.integers(0, 3)) == 0:
        nested = {"n": {"t": doc["t"]}}
        doc = {**nested, **doc} if draw(st.booleans()) else {**doc, **nested}
    return doc


@st.composite
def edits(draw: st.DrawFn) -> EditField:
    """Random operations over the same values."""
    replace = draw(st.lists(st.tuples(elements, elements), max_size=3))
    return EditField.of(
        draw(st.sampled_from(["t", "t", "t", "n"])),
        Operations(
            add_items=draw(st.lists(elements, max_size=3)),
            remove_items=draw(st.lists(elements, max_size=2)),
            replace_items=[ReplaceItem(a, b) for a, b in replace],
            remove_duplicates=draw(st.booleans()),
        ),
    )


def stored(storage: PostgresStorage, name: str) -> list[tuple[str, str]]:
    """``(id, doc)`` of the collection's rows, as stored."""
    with storage.database.read() as conn:
        rows = conn.execute(
            "SELECT i.id, i.doc FROM taskengine_items AS i JOIN taskengine_collections AS c"
            " ON c.id = i.coll WHERE c.name = %s ORDER BY i.id",
            (name,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def batches(
    storage: PostgresStorage,
    name: str,
    limit: int,
    flt: ItemFilter | None,
    change: ItemChange,
    *,
    reference: bool,
) -> list[tuple[str | None, int, int, tuple[tuple[str, str], ...]]]:
    """Every batch from the start: (cursor, written, unchanged, refused)."""
    after: str | None = None
    out = []
    for _ in range(100):
        with storage.atomic():
            call = change_by_scan if reference else type(storage).change_matching
            result: ChangeResult = call(
                storage, name, "LIVE", after=after, limit=limit, filter=flt, change=change
            )
        assert result.missing == ()
        out.append((result.cursor, result.written, result.unchanged, result.refused))
        if result.cursor is None:
            return out
        after = result.cursor
    raise AssertionError("the batches did not reach the end")


def totals(
    results: list[tuple[str | None, int, int, tuple[tuple[str, str], ...]]],
) -> tuple[int, int, list[tuple[str, str]]]:
    """Written, unchanged and refused over all the batches."""
    refused = sorted(item for result in results for item in result[3])
    return sum(r[1] for r in results), sum(r[2] for r in results), refused


def fill(shared: PgDatabase, docs: list[dict[str, Any]]) -> PostgresStorage:
    """Collections ``a`` and ``b``, each holding ``docs`` as items ``i0``, ``i1``, ..."""
    storage = emptied(shared, "a", "b")
    items = [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)]
    for name in ("a", "b"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", items)
    return storage


_TAGS = EditField.of(
    "t",
    Operations(
        add_items=["x", "sale"],
        remove_items=["outdated"],
        replace_items=[ReplaceItem("Goob", "Good")],
        remove_duplicates=True,
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example([{"t": ["Goob", "outdated", "x", "x"]}, {}, {"t": None}, {"t": []}], _TAGS, None, 2)
@example([{"n": {"t": ["x"]}, "t": ["x"]}, {"t": ["x"], "n": {"t": ["x"]}}], _TAGS, None, 3)
# A replaced value removed, then added again: the removed one is no duplicate of it.
@example(
    [{"t": ["y", "x"]}, {"t": ["y"]}],
    EditField.of(
        "t",
        Operations(
            add_items=["x"],
            remove_items=["x"],
            replace_items=[ReplaceItem("y", "x")],
            remove_duplicates=True,
        ),
    ),
    None,
    2,
)
@given(
    st.lists(documents(), max_size=6),
    edits(),
    st.sampled_from([None, {"a": {"$exists": True}}, {"t": "x"}]),
    st.integers(1, 4),
)
def test_the_edit_equals_the_scan_path(
    shared: PgDatabase,
    docs: list[dict[str, Any]],
    change: EditField,
    spec: dict[str, Any] | None,
    limit: int,
) -> None:
    """Every batch's counters (their sums with a filter) and the stored texts equal
    ``change_by_scan``'s."""
    storage = fill(shared, docs)
    flt = None if spec is None else compile_filter(spec)
    got = batches(storage, "a", limit, flt, change, reference=False)
    expected = batches(storage, "b", limit, flt, change, reference=True)
    if flt is None:
        assert got == expected
    else:  # a batch may be ``limit`` candidate rows (docs with U+0000 are undecided)
        assert totals(got) == totals(expected)
    assert stored(storage, "a") == stored(storage, "b")


def _edit(
    add: tuple[Any, ...] = (),
    remove: tuple[Any, ...] = (),
    replace: tuple[tuple[Any, Any], ...] = (),
    dedupe: bool = False,
) -> EditField:
    return EditField.of(
        "t",
        Operations(
            add_items=add,
            remove_items=remove,
            replace_items=[ReplaceItem(a, b) for a, b in replace],
            remove_duplicates=dedupe,
        ),
    )


@pytest.mark.parametrize(
    ("change", "docs", "in_python"),
    [
        # Spliced: missing, null and arrays of strings, booleans, null; the replaced and
        # added values may be anything (their texts are Python's); numbers and objects
        # among the compared values match no such element.
        (
            _TAGS,
            [{}, {"t": None}, {"t": []}, {"t": ["Goob", True, None, "x", "Goob", "outdated"]}],
            [],
        ),
        (
            _edit(add=(1.0, {"b": 1, "a": _DATES[1]}), replace=(("x", [1e16]),), dedupe=True),
            [{"t": ["x", "y", "x"]}, {"t": None}],
            [],
        ),
        (_edit(remove=(1, {"a": 1}, [True]), replace=((1.0, "y"),)), [{"t": ["x", True]}], []),
        # The first matching pair wins, on the value before any replace (a swap swaps).
        (
            _edit(replace=(("x", "a"), ("x", "b"), ("a", "x"))),
            [{"t": ["x", "a", "b"]}, {"t": ["b", "x"]}],
            [],
        ),
        # Arrays of plain strings (the text[] form): empty strings, commas and brackets
        # inside strings, an empty array; and replaced one after the other only where
        # no pair's "from" is an earlier pair's "to".
        (
            _edit(add=("", "a,b"), remove=("x]",), replace=(("", "e"), ("[", "")), dedupe=True),
            [{"t": [""]}, {"t": ["", ""]}, {"t": []}, {"t": ["a,b", "x]", "[", "é\U0001f600"]}],
            [],
        ),
        (_edit(replace=(("x", "y"), ("y", "z"))), [{"t": ["x", "y"]}, {"t": ["y", "x", "x"]}], []),
        # Values that are not plain strings (escapes) leave the text[] form to the
        # general one; a replaced value removed then added again is no duplicate of it
        # (general form: the boolean).
        (_edit(replace=(("x", 'q"'),), add=("b\\",)), [{"t": ["x", "y"]}, {"t": []}], []),
        (
            _edit(add=("x",), remove=("x",), replace=(("y", "x"),), dedupe=True),
            [{"t": ["y", True, "x"]}, {"t": ["y", "x"]}],
            [],
        ),
        # Long edits: the text[] form's nesting is bounded, the rest takes the general form.
        (
            _edit(
                remove=tuple(f"r{n}" for n in range(3000)),
                add=tuple(f"a{n}" for n in range(3000)),
                dedupe=True,
            ),
            [{"t": ["r1", "a5", "x"]}, {"t": None}],
            [],
        ),
        # Dates pass through unless they are compared: by a removed date, or by dedupe.
        (_edit(remove=("x",), replace=(("y", "z"),)), [{"t": [_DATES[1], "x", "y"]}], []),
        (_edit(remove=(_DATES[0],)), [{"t": [_DATES[1]]}, {"t": ["x"]}], ["i0"]),
        (_edit(add=("x",), dedupe=True), [{"t": [_DATES[1], _DATES[0]]}, {"t": ["x"]}], ["i0"]),
        # To Python: a number or an escaped string in the array, a value not an array
        # (refused, or a replace of the whole value), the pair nested too, no jsonb.
        (
            _TAGS,
            [
                {"t": [1]},
                {"t": ["a\\b"]},
                {"t": "Goob"},
                {"n": {"t": ["x"]}, "t": ["x"]},
                {"t": ["x"], "z": "\x00"},
                # Without its number the array's text would be the nested one's.
                {"n": {"t": ["x"]}, "t": [1, "x"]},
            ],
            ["i0", "i1", "i2", "i3", "i4", "i5"],
        ),
        # A replaced value is removed when it equals a removed value (the element itself
        # does not), and kept otherwise (though the element equals a removed value).
        (
            _edit(remove=("x", 1), replace=(("y", "x"), ("x", "z"), ("a", 1.0))),
            [{"t": ["y", "x", "a", "b"]}],
            [],
        ),
        (_edit(replace=(("Goob", "Good"),)), [{"t": "Goob"}, {"t": True}], ["i0", "i1"]),
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
    storage = fill(shared, docs)
    seen = rows_left_to_python(monkeypatch)
    got = batches(storage, "a", 10, None, change, reference=False)
    assert seen == in_python
    assert got == batches(storage, "b", 10, None, change, reference=True)
    assert stored(storage, "a") == stored(storage, "b")


def test_an_unchanged_row_is_not_written(shared: PgDatabase) -> None:
    """A missing or null field staying empty, and an array edited to the same text, are
    counted unchanged, and their rows keep their version (no write)."""
    storage = fill(shared, [{}, {"t": None}, {"t": ["x", "y"]}, {"t": ["Goob"]}])
    with storage.database.read() as conn:
        before = conn.execute("SELECT id, xmin::text FROM taskengine_items ORDER BY id").fetchall()
    change = _edit(remove=("z",), replace=(("Goob", "Good"),), dedupe=True)
    assert batches(storage, "a", 10, None, change, reference=False) == [(None, 1, 3, ())]
    with storage.database.read() as conn:
        after = conn.execute("SELECT id, xmin::text FROM taskengine_items ORDER BY id").fetchall()
    assert len(set(before) - set(after)) == 1  # only i3 of collection a was rewritten


@pytest.mark.parametrize(
    "edit",
    [
        ArrayEdit('q"', add=("x",)),  # a key that needs an escape
        ArrayEdit("t", add=(math.nan,)),  # not storable: the scan path raises
        ArrayEdit("t", replace=(("x", 2**64),)),
        ArrayEdit("t", remove=({"$date": "2030-01-01T00:00:00+00:00"},)),
    ],
)
def test_edits_without_a_splice(edit: ArrayEdit) -> None:
    """These take the scan path."""
    assert edit_form(edit) is None


def test_which_edits_have_the_text_form() -> None:
    """Plain strings everywhere (numbers and the like are left out of the comparisons):
    the text[] form; a pair replacing a replaced value, an escaped or non-string value
    written: only the general one."""
    assert _plain_steps(["Goob", 1, 'q"'], ["Good", "a", "b"], ["outdated", None], ["x"]) == (
        [("Goob", "Good")],
        ["outdated"],
        ["x"],
    )
    assert _plain_steps(["x", "y"], ["y", "z"], [], []) is None
    assert _plain_steps(["x"], ['q"'], [], []) is None
    assert _plain_steps(["x"], [1], [], []) is None
    assert _plain_steps([], [], [], ["b\\"]) is None
    assert _plain_steps([], [], [], [True]) is None


stored_values = st.recursive(
    st.sampled_from([*_PLAIN, *_ODD]),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=6,
)


def twin(value: Any) -> Any:
    """An equal value of another form where there is one: a number of the other type, a
    date at another offset, a dict in reverse key order (recursively)."""
    if type(value) is int:
        return float(value)
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone(timedelta(hours=-3)))
    if type(value) is list:
        return [twin(v) for v in value]
    if type(value) is dict:
        return {k: twin(value[k]) for k in reversed(value)}
    return value


@example(1, 1.0)
@example(-0.0, 0)
@example(2**63 - 1, 2**63 - 1.0)
@example(_DATES[0], _DATES[2])
@given(stored_values, st.one_of(stored_values, st.just(None)))
def test_equality_keys_are_equality(a: Any, b: Any) -> None:
    """Two stored values have the same key exactly when they are ``values_equal`` (``b``
    ``None``: ``a``'s twin)."""
    a, b = admit({"_id": "_", "v": [a, twin(a) if b is None else b]})[1]["v"]
    assert (equality_key(a) == equality_key(b)) == values_equal(a, b)
