"""Conformance checks of the optional set-based capability (``change_matching``).

An adapter whose class defines ``ChangingStorage.change_matching`` must end every batch
exactly as the reference, :func:`~taskengine.storage.changes.change_by_scan` on a
``MemoryStorage`` holding the same items, would: the same stored values (strictly: types,
signed zeros, key order, date offsets), the same counts, the same refusals. Adapters
without the capability pass these checks trivially.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from taskengine.errors import InvalidItem
from taskengine.filters import compile_filter
from taskengine.storage.base import Storage
from taskengine.storage.changes import ChangeResult, ItemChange, change_by_scan
from taskengine.storage.memory import MemoryStorage
from taskengine.tasktypes._changes import (
    DELETE_MATCHED,
    CopyField,
    EditField,
    RemoveFields,
    SetField,
)
from taskengine.tasktypes._fieldops import Operations, ReplaceItem
from taskengine.testing._checks import PLUS_0530, ConformanceError, expect, register, same_value

__all__ = ["check_change_matching_agrees", "check_change_matching_refuses_whole"]

_DATE = datetime(2030, 1, 1, 12, 30, tzinfo=PLUS_0530)
_ITEMS: list[dict[str, Any]] = [
    {"_id": "a", "n": 1, "s": "x", "t": ["x", "y", "x"], "z": -0.0, "w": 0.0},
    {"_id": "b", "n": 2, "s": "DRAFT", "t": None, "d": _DATE, 'q"k': 1},
    {"_id": "c", "n": 3, "s": "a\x00b", "t": "not an array", "w": [0.0, {"k": 1.0}]},
    {"_id": "d", "n": 4, "t": [1, 1.0, True], "d": _DATE.astimezone(timezone.utc)},
    {"_id": "e", "n": 5.0, "s": {"$date": "not a date", "k": 1}, "z": [-0.0]},
    {"_id": "f\x00g", "n": 6, "s": "DRAFT", "t": []},
    {"_id": "h", "n": [7, 8], "s": None, "d": datetime(2030, 1, 1, 7)},
    {"_id": "i", "s": "é", "t": [{"x": 1}, {"x": 1}]},
]


_CHANGES: list[tuple[str, ItemChange]] = [
    ("delete", DELETE_MATCHED),
    ("set a string", SetField("s", "DRAFT", needs_ids=True)),
    ("set a date", SetField("d", _DATE, needs_ids=True)),
    ("remove fields", RemoveFields(("d", "z"), needs_ids=True)),
    ("copy", CopyField("z", "w")),
    ("copy a string", CopyField("s", "t")),
    ("add to an array", EditField.of("t", Operations(add_items=("x", 1.0, -0.0)))),
    (
        "edit an array",
        EditField.of(
            "t",
            Operations(
                remove_items=("y",),
                replace_items=(ReplaceItem(1, "one"),),
                remove_duplicates=True,
            ),
        ),
    ),
]
_FILTERS: list[dict[str, Any] | None] = [None, {"n": {"$gte": 3}}, {"s": {"$startsWith": "a"}}]


def _run(
    batch: Callable[..., ChangeResult], storage: Storage, flt: Any, change: ItemChange, limit: int
) -> tuple[int, int, list[tuple[str, str]], list[str]]:
    written = unchanged = 0
    refused: list[tuple[str, str]] = []
    ids: list[str] = []
    after: str | None = None
    for _ in range(len(_ITEMS) + 2):
        with storage.atomic():
            result = batch(
                storage, "c", "LIVE", after=after, limit=limit, filter=flt, change=change
            )
        expect(
            isinstance(result, ChangeResult),
            f"change_matching must return a ChangeResult, got {type(result).__name__}",
        )
        written += result.written
        unchanged += result.unchanged
        refused += result.refused
        ids += result.done
        if result.cursor is None:
            return written, unchanged, sorted(refused), sorted(ids)
        after = result.cursor
    raise ConformanceError("change_matching never returned a None cursor")


def _stored(storage: Storage) -> list[Any]:
    return list(storage.find("c", "LIVE"))


@register
def check_change_matching_agrees(storage: Storage) -> None:
    """change_matching ends every batch as change_by_scan does: values, counts, refusals."""
    method = getattr(type(storage), "change_matching", None)
    if method is None:
        return
    for spec in _FILTERS:
        flt = None if spec is None else compile_filter(spec, "wix")
        for name, change in _CHANGES:
            for limit in (1, 3):
                for info in storage.list_collections():
                    storage.drop_collection(info.name)
                storage.create_collection("c")
                storage.insert_items("c", "LIVE", _ITEMS)
                reference = MemoryStorage()
                reference.create_collection("c")
                reference.insert_items("c", "LIVE", _ITEMS)
                what = f"{name} (filter {spec}, limit {limit})"
                got = _run(method, storage, flt, change, limit)
                expected = _run(change_by_scan, reference, flt, change, limit)
                expect(
                    same_value(_stored(storage), _stored(reference)),
                    f"change_matching, {what}: stored {_stored(storage)!r},"
                    f" the scan path stores {_stored(reference)!r}",
                )
                expect(
                    got[:3] == expected[:3],
                    f"change_matching, {what}: (written, unchanged, refused) {got[:3]!r},"
                    f" the scan path {expected[:3]!r}",
                )
                if change.needs_ids:
                    expect(
                        got[3] == expected[3],
                        f"change_matching, {what}: reported ids {got[3]!r}, expected"
                        f" {expected[3]!r}",
                    )


class _Unstorable:
    """A change whose result cannot be stored (a set) on the item with ``n == 3``."""

    deletes = False
    needs_ids = False

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        item["v"] = {1} if item.get("n") == 3 else 1
        return item

    def to_sql(self, backend: str, document: str) -> None:
        return None


@register
def check_change_matching_refuses_whole(storage: Storage) -> None:
    """A change result that cannot be stored raises InvalidItem; nothing of the batch is
    written (and an atomic() block around it that rolls back undoes it all)."""
    method = getattr(type(storage), "change_matching", None)
    if method is None:
        return
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", _ITEMS)
    before = _stored(storage)
    try:
        with storage.atomic():
            method(storage, "c", "LIVE", after=None, limit=5, filter=None, change=_Unstorable())
    except InvalidItem:
        pass
    else:
        raise ConformanceError("a change result holding a set was stored without InvalidItem")
    expect(
        same_value(_stored(storage), before),
        f"a batch refused with InvalidItem left writes behind: {_stored(storage)!r}",
    )
    if getattr(storage, "atomic_rolls_back", False) is True:
        try:
            with storage.atomic():
                method(
                    storage, "c", "LIVE", after=None, limit=2, filter=None, change=DELETE_MATCHED
                )
                raise _Boom
        except _Boom:
            pass
        expect(
            same_value(_stored(storage), before),
            "atomic() did not roll back a change_matching batch",
        )


class _Boom(Exception):
    pass
