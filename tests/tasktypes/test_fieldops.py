"""Field operations of EDIT_FIELD_DATA and COPY_FIELD_DATA (docs/task-types.md)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from taskengine._values import values_equal
from taskengine.tasktypes._fieldops import (
    MISSING,
    EditRefused,
    Operations,
    ReplaceItem,
    compile_edit,
    copy_item,
    copy_value,
    edit_item,
    edit_value,
    identical,
)

D1 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def ops(**kw: Any) -> Operations:
    """Shorthand for Operations with replace pairs given as tuples."""
    replace = [ReplaceItem(f, t) for f, t in kw.pop("replace", [])]
    return Operations(replace_items=replace, **kw)


# --------------------------------------------------------------------------- edit_value rules


def test_order_is_replace_remove_add_dedupe() -> None:
    """Replace runs before remove, remove before add, and dedupe last."""
    o = ops(
        replace=[("Goob", "Good")],
        remove_items=["outdated"],
        add_items=["sale", "Good"],
        remove_duplicates=True,
    )
    assert edit_value(["Goob", "outdated", "x"], o) == ["Good", "x", "sale"]


def test_remove_then_add_keeps_added_value() -> None:
    """A value both removed and added ends up present once (add runs after remove)."""
    assert edit_value(["a", "b"], ops(remove_items=["a"], add_items=["a"])) == ["b", "a"]


def test_replace_result_can_be_removed() -> None:
    """Remove sees the replaced elements, so a replace target can be removed."""
    assert edit_value(["a", "b"], ops(replace=[("a", "z")], remove_items=["z"])) == ["b"]


def test_missing_and_null_are_empty_arrays() -> None:
    """Missing or null fields behave as the empty array."""
    assert edit_value(MISSING, ops(add_items=["x"])) == ["x"]
    assert edit_value(None, ops(add_items=["x"])) == ["x"]
    assert edit_value(None, ops(remove_items=["x"])) == []


def test_remove_removes_every_equal_element() -> None:
    """removeItems drops every element equal to one listed, not just the first."""
    assert edit_value(["a", 1, "a", 1.0, True], ops(remove_items=["a", 1])) == [True]


def test_equality_is_type_strict() -> None:
    """1 equals 1.0 but True does not equal 1, and "1" does not equal 1."""
    assert edit_value([1, True, "1", 1.0], ops(remove_items=[1])) == [True, "1"]
    assert edit_value([1, True], ops(remove_items=[True])) == [1]


def test_dicts_compare_by_content() -> None:
    """Objects are equal regardless of key order."""
    assert edit_value([{"a": 1, "b": 2}], ops(remove_items=[{"b": 2, "a": 1}])) == []


def test_dates_compare_by_instant() -> None:
    """A $date wrapper removes the equal datetime element."""
    assert edit_value([D1, "x"], ops(remove_items=[{"$date": "2025-01-01T00:00:00Z"}])) == ["x"]


def test_replace_on_array_replaces_all_matches() -> None:
    """replaceItems on an array replaces every matching element."""
    assert edit_value(["a", "b", "a"], ops(replace=[("a", "c")])) == ["c", "b", "c"]


def test_replace_first_rule_wins_so_swaps_work() -> None:
    """With a->b and b->a, elements are swapped, not collapsed."""
    assert edit_value(["a", "b"], ops(replace=[("a", "b"), ("b", "a")])) == ["b", "a"]


def test_replace_on_scalar_replaces_whole_value() -> None:
    """replaceItems on a non-array value replaces it when it equals from (ref)."""
    assert edit_value("Goob", ops(replace=[("Goob", "Good")])) == "Good"
    assert edit_value("Other", ops(replace=[("Goob", "Good")])) == "Other"
    assert edit_value(5, ops(replace=[(5.0, 6)])) == 6


def test_add_on_non_array_is_refused() -> None:
    """add/remove/dedupe on a string, number or object is refused."""
    for value in ("tag", 3, {"a": 1}, True, D1):
        for o in (ops(add_items=["x"]), ops(remove_items=["x"]), ops(remove_duplicates=True)):
            assert isinstance(edit_value(value, o), EditRefused)


def test_refusal_names_the_type() -> None:
    """The refusal reason says what the field holds."""
    out = edit_value("tag", ops(add_items=["x"]))
    assert isinstance(out, EditRefused)
    assert "a string" in out.reason


def test_dedupe_keeps_first_occurrences() -> None:
    """removeDuplicates keeps the first of equal elements, in order."""
    assert edit_value(["b", "a", "b", 1, 1.0, True], ops(remove_duplicates=True)) == [
        "b",
        "a",
        1,
        True,
    ]


def test_edit_value_never_shares_with_operations() -> None:
    """Mutating the result never changes the operations' values."""
    o = ops(add_items=[{"k": [1]}])
    out = edit_value([], o)
    out[0]["k"].append(2)
    assert o.add_items[0] == {"k": [1]}


def test_edit_value_does_not_mutate_input() -> None:
    """The old value is left untouched."""
    old = ["a", "b"]
    edit_value(old, ops(remove_items=["a"], add_items=["c"]))
    assert old == ["a", "b"]


# --------------------------------------------------------------------------- edit_item


def test_edit_item_reports_change() -> None:
    """edit_item writes the new value and says the item changed."""
    item = {"_id": "1", "tags": ["a"]}
    assert edit_item(item, "tags", ops(add_items=["b"])) is True
    assert item["tags"] == ["a", "b"]


def test_edit_item_missing_field_staying_empty_is_unchanged() -> None:
    """A missing field that stays empty is not created."""
    item = {"_id": "1"}
    assert edit_item(item, "tags", ops(remove_items=["b"])) is False
    assert item == {"_id": "1"}


def test_edit_item_refused_leaves_item() -> None:
    """A refused edit leaves the item exactly as it was."""
    item = {"_id": "1", "tags": "solo"}
    out = edit_item(item, "tags", ops(replace=[("solo", "duo")], add_items=["x"]))
    assert isinstance(out, EditRefused)
    assert item == {"_id": "1", "tags": "solo"}


def test_edit_item_same_value_is_unchanged() -> None:
    """An edit producing an identical value is not a change."""
    item = {"_id": "1", "tags": ["a"]}
    assert edit_item(item, "tags", ops(remove_items=["zz"])) is False


def test_edit_item_int_to_float_is_a_change() -> None:
    """Replacing 1 by 1.0 changes the stored type, so it is written."""
    item = {"_id": "1", "n": [1]}
    assert edit_item(item, "n", ops(replace=[(1, 1.0)])) is True
    assert type(item["n"][0]) is float


# --------------------------------------------------------------------------- identical


def test_identical_is_stricter_than_equality() -> None:
    """identical distinguishes int/float and key order; values_equal does not."""
    assert values_equal(1, 1.0)
    assert not identical(1, 1.0)
    assert values_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not identical({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert identical([1, {"a": "x"}], [1, {"a": "x"}])
    assert not identical(True, 1)
    assert identical(float("nan"), float("nan"))


# --------------------------------------------------------------------------- copy


def test_copy_item_deep_copies() -> None:
    """The target is a deep copy: mutating it never changes the source."""
    item: dict[str, Any] = {"_id": "1", "src": {"a": [1, 2]}}
    assert copy_item(item, "src", "dst") is True
    item["dst"]["a"].append(3)
    assert item["src"] == {"a": [1, 2]}


def test_copy_item_without_source_is_unchanged() -> None:
    """An item without the source field is left as it was."""
    item = {"_id": "1", "dst": 5}
    assert copy_item(item, "src", "dst") is False
    assert item == {"_id": "1", "dst": 5}


def test_copy_item_no_type_conversion() -> None:
    """Copy keeps the source's type, overwriting a target of another type."""
    item = {"_id": "1", "src": "12", "dst": 12}
    assert copy_item(item, "src", "dst") is True
    assert item["dst"] == "12"


def test_copy_null_source_copies_null() -> None:
    """A null source is a present value and is copied."""
    item = {"_id": "1", "src": None, "dst": 1}
    assert copy_item(item, "src", "dst") is True
    assert item["dst"] is None
    assert copy_value({"x": 1}, "src") is MISSING


# --------------------------------------------------------------------------- properties

scalars = st.one_of(
    st.sampled_from(["a", "b", "A", "", "1"]),
    st.integers(-2, 2),
    st.sampled_from([1.0, 0.5, -0.0]),
    st.booleans(),
    st.none(),
    st.just(D1),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["k", "j"]), inner, max_size=2),
    ),
    max_leaves=6,
)
operations = st.builds(
    Operations,
    add_items=st.lists(values, max_size=4),
    remove_items=st.lists(values, max_size=4),
    replace_items=st.lists(st.builds(ReplaceItem, values, values), max_size=3),
    remove_duplicates=st.booleans(),
)
field_values = st.one_of(st.just(MISSING), st.lists(values, max_size=6), values)


def reference_edit(old: Any, o: Operations) -> Any:
    """A slow, direct transcription of docs/task-types.md EDIT_FIELD_DATA (None = refused)."""
    value = [] if old is MISSING or old is None else copy.deepcopy(old)

    def replaced(v: Any) -> Any:
        for rule in o.replace_items:
            if values_equal(v, rule.from_):
                return copy.deepcopy(rule.to)
        return v

    value = [replaced(v) for v in value] if isinstance(value, list) else replaced(value)
    if not (o.add_items or o.remove_items or o.remove_duplicates):
        return ("ok", value)
    if value is None:
        value = []
    if not isinstance(value, list):
        return ("refused", None)
    value = [v for v in value if not any(values_equal(v, r) for r in o.remove_items)]
    value = value + [copy.deepcopy(a) for a in o.add_items]
    if o.remove_duplicates:
        out: list[Any] = []
        for v in value:
            if not any(values_equal(v, w) for w in out):
                out.append(v)
        value = out
    return ("ok", value)


@given(field_values, operations)
def test_edit_value_matches_reference(old: Any, o: Operations) -> None:
    """edit_value equals the slow reference for any value and operations."""
    snapshot = copy.deepcopy(old)
    kind, expected = reference_edit(old, o)
    got = edit_value(old, o)
    if kind == "refused":
        assert isinstance(got, EditRefused)
    else:
        assert not isinstance(got, EditRefused)
        assert identical(got, expected)
    assert identical(old, snapshot) or old is MISSING


@given(field_values, operations)
def test_dedupe_result_has_no_equal_pair(old: Any, o: Operations) -> None:
    """After removeDuplicates no two elements of the result are equal."""
    o = Operations(o.add_items, o.remove_items, o.replace_items, True)
    got = edit_value(old, o)
    if isinstance(got, list):
        for i, a in enumerate(got):
            for b in got[i + 1 :]:
                assert not values_equal(a, b)


@given(st.dictionaries(st.sampled_from(["s", "t", "u"]), values, max_size=3))
def test_copy_item_touches_only_target(fields: dict[str, Any]) -> None:
    """copy_item changes at most the target field, and target ends identical to source."""
    item = {"_id": "x", **fields}
    before = copy.deepcopy(item)
    copy_item(item, "s", "t")
    for key in before:
        if key != "t":
            assert identical(item[key], before[key])
    if "s" in before:
        assert identical(item["t"], before["s"])
    else:
        assert item == before


strs = st.sampled_from(["a", "b", "A", "", "1"])
string_operations = st.builds(
    Operations,
    add_items=st.lists(scalars, max_size=4),
    remove_items=st.lists(strs, max_size=4),
    replace_items=st.lists(st.builds(ReplaceItem, strs, scalars), max_size=3),
    remove_duplicates=st.booleans(),
)


@given(field_values, st.one_of(string_operations, operations))
def test_compiled_edit_agrees_with_edit_item(old: Any, o: Operations) -> None:
    """compile_edit (fast string path included) gives edit_item's outcome and item."""
    slow: dict[str, Any] = {"_id": "x"} if old is MISSING else {"_id": "x", "f": old}
    fast = copy.deepcopy(slow)
    expected = edit_item(slow, "f", o)
    got = compile_edit("f", o)(fast)
    assert type(got) is type(expected)
    if isinstance(expected, EditRefused):
        assert got == expected
    else:
        assert got is expected
    assert identical(fast, slow)
