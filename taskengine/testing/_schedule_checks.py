"""Conformance checks of the optional schedule index (``due_items``, ``next_due_date``).

An adapter that answers :class:`~taskengine.storage.schedule.ScheduleIndex` must give
what :func:`~taskengine.storage.schedule.due_by_scan` gives from a full scan of the same
items, after every kind of write (the index is kept on the adapter's own writes), for
both environments. Adapters without the capability pass these checks trivially.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from taskengine.errors import CollectionNotFound
from taskengine.storage.base import Storage
from taskengine.storage.schedule import (
    DATE_FIELDS,
    date_key,
    due_by_scan,
    has_schedule_index,
    key_date,
)
from taskengine.testing._checks import PLUS_0530, expect, expect_raises, register

__all__ = ["check_schedule_index_agrees"]

_T = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
_ODD = timezone(timedelta(hours=-3, minutes=-7, seconds=-5))  # an offset with seconds
_ITEMS: list[dict[str, Any]] = [
    {"_id": "a", "_publishDate": _T},
    {"_id": "b", "_draftDate": _T.astimezone(PLUS_0530)},  # the same instant as "a"
    {"_id": "c", "_publishDate": datetime(2030, 1, 1, 11, 59, 59, 999999)},  # naive: UTC
    {"_id": "d", "_publishDate": _T + timedelta(hours=1), "_draftDate": _T - timedelta(days=1)},
    {"_id": "e", "_publishDate": (_T + timedelta(microseconds=1)).astimezone(_ODD)},
    {"_id": "f", "_publishDate": "2029-01-01T00:00:00Z"},  # a string is not a date
    {"_id": "g", "_publishDate": {"$date": "not a date", "k": 1}},
    {"_id": "h", "x": {"_publishDate": _T}},  # not a top-level field
    {"_id": "i\x00j", "_draftDate": _T - timedelta(hours=2), "s": "a\x00b"},
    {"_id": "k", "_publishDate": datetime(1, 1, 1, 0, 0, tzinfo=timezone.utc)},
    {"_id": "l"},
]
_NOWS = [
    _T - timedelta(days=400),
    _T - timedelta(microseconds=1),
    _T,
    _T + timedelta(microseconds=1),
    _T + timedelta(days=1),
    datetime(2030, 1, 1, 12, 0),  # naive: UTC
]


def _agree(storage: Storage, env: str, what: str) -> None:
    for now in _NOWS:
        for limit in (1, 2, 100):
            got = storage.due_items("p", env, now, limit=limit)  # type: ignore[attr-defined]
            want = due_by_scan(storage, "p", env, now, limit=limit)
            expect(
                got == want,
                f"due_items({now.isoformat()}, limit={limit}) in {env} {what}: {got!r},"
                f" a scan of the items gives {want!r}",
            )
    keys = [
        key
        for item in storage.find("p", env)
        for field in DATE_FIELDS
        if (key := date_key(item.get(field))) is not None
    ]
    want_next = key_date(min(keys)) if keys else None
    got_next = storage.next_due_date("p", env)  # type: ignore[attr-defined]
    expect(
        got_next == want_next,
        f"next_due_date in {env} {what}: {got_next!r}, a scan of the items gives {want_next!r}",
    )


@register
def check_schedule_index_agrees(storage: Storage) -> None:
    """due_items and next_due_date answer what a scan of the items does, after inserts,
    replacements and deletes, in both environments; an unknown collection is refused."""
    if not has_schedule_index(storage):
        return
    storage.create_collection("p", sandbox=True, publish_plugin=True)
    _agree(storage, "LIVE", "(empty)")
    storage.insert_items("p", "LIVE", _ITEMS)
    storage.insert_items("p", "SANDBOX", _ITEMS[3:6])
    _agree(storage, "LIVE", "after an insert")
    _agree(storage, "SANDBOX", "after an insert")
    storage.replace_items(
        "p",
        "LIVE",
        [
            {"_id": "a", "_publishDate": _T + timedelta(days=2)},  # moved later
            {"_id": "d"},  # both dates gone
            {"_id": "l", "_draftDate": _T - timedelta(minutes=1)},  # a new date
        ],
    )
    _agree(storage, "LIVE", "after a replace")
    storage.delete_items("p", "LIVE", ["b", "i\x00j"])
    _agree(storage, "LIVE", "after a delete")
    _agree(storage, "SANDBOX", "after writes to LIVE")
    expect_raises(
        CollectionNotFound,
        "due_items of an unknown collection",
        lambda: storage.due_items("nope", "LIVE", _T, limit=1),  # type: ignore[attr-defined]
    )
