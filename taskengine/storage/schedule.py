"""The publish schedule as an index in the store: which items' dates are due.

The publish scheduler (``taskengine.tasktypes._publish_schedule``) flips an item's
``_publishStatus`` when its ``_publishDate`` or ``_draftDate`` passes. An adapter that
implements :class:`ScheduleIndex` answers "which items are due at ``now``, oldest
first" and "when is the next date" from an index it keeps on its own writes, so the
scheduler holds no timeline and an engine's start reads nothing. An adapter without it
(``due_items`` missing or ``None``) gets the scheduler's in-memory timeline instead,
rebuilt from a scan when the engine starts.

**The rule** (one for every adapter, :func:`date_key`): a field holds a scheduled date
when its value is a date (a ``datetime``; naive means UTC) whose instant falls within
years 1..9999 in UTC; its *key* is that instant in whole microseconds since the Unix
epoch, so keys compare exactly as instants do (offsets and microseconds included). A
string, a number or any other value is not a date here. An item is *due* at ``now`` when
the key of either field is at most ``now``'s; its due date is the earlier of the two.
:func:`due_by_scan` is the reference, on :meth:`Storage.find`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Final, Protocol, runtime_checkable

from taskengine.errors import InvalidRequest, Violation
from taskengine.storage.base import Environment, Storage, check_limit

__all__ = [
    "DATE_FIELDS",
    "DRAFT_DATE",
    "MAX_KEY",
    "MIN_KEY",
    "PUBLISH_DATE",
    "ScheduleIndex",
    "date_key",
    "due_by_scan",
    "has_schedule_index",
    "key_date",
    "merge_due",
    "now_key",
]

PUBLISH_DATE: Final = "_publishDate"
"""The item field holding when the item becomes ``PUBLISHED``."""
DRAFT_DATE: Final = "_draftDate"
"""The item field holding when the item becomes ``DRAFT``."""
DATE_FIELDS: Final = (PUBLISH_DATE, DRAFT_DATE)
"""The two scheduled-date fields, in the order adapters index them."""

_EPOCH: Final = datetime(1970, 1, 1)
_UTC_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO: Final = timedelta(microseconds=1)

MIN_KEY: Final = (datetime(1, 1, 1) - _EPOCH) // _MICRO
"""The key of ``0001-01-01T00:00:00Z``, the earliest instant that is scheduled."""
MAX_KEY: Final = (datetime(9999, 12, 31, 23, 59, 59, 999999) - _EPOCH) // _MICRO
"""The key of ``9999-12-31T23:59:59.999999Z``, the latest instant that is scheduled."""


def date_key(value: object) -> int | None:
    """The key of a scheduled date held in a field (see the module docstring), or ``None``.

    Never raises: an instant outside years 1..9999 in UTC (``0001-01-01T00:30+01:00``)
    is ``None``, like any value that is not a ``datetime``. (Subtracting two aware
    datetimes works on their naive parts and offsets, so it never overflows.)
    """
    if not isinstance(value, datetime):
        return None
    if value.utcoffset() is None:
        key = (value.replace(tzinfo=None) - _EPOCH) // _MICRO
    else:
        key = (value - _UTC_EPOCH) // _MICRO
    return key if MIN_KEY <= key <= MAX_KEY else None


def key_date(key: int) -> datetime:
    """The aware UTC ``datetime`` of a key (the inverse of :func:`date_key`)."""
    return _UTC_EPOCH + timedelta(microseconds=key)


def now_key(now: object) -> int:
    """The key of ``now`` (an aware or naive ``datetime``), clamped to the scheduled range.

    Raises:
        InvalidRequest: ``now`` is not a ``datetime``.
    """
    if not isinstance(now, datetime):
        raise InvalidRequest([Violation("now", f"must be a datetime, got {type(now).__name__}")])
    delta = now.replace(tzinfo=None) - _EPOCH
    offset = now.utcoffset()
    if offset:
        delta -= offset
    return min(max(delta // _MICRO, MIN_KEY - 1), MAX_KEY)


def merge_due(rows: Iterable[tuple[str, int]], limit: int) -> list[tuple[str, datetime]]:
    """``(item id, key)`` rows of either field (an id may come twice) as the answer of
    :meth:`ScheduleIndex.due_items`: each id once with its smallest key, ordered by
    ``(key, id)``, at most ``limit``."""
    best: dict[str, int] = {}
    for item_id, key in rows:
        old = best.get(item_id)
        if old is None or key < old:
            best[item_id] = key
    ordered = sorted(best.items(), key=lambda pair: (pair[1], pair[0]))[:limit]
    return [(item_id, key_date(key)) for item_id, key in ordered]


@runtime_checkable
class ScheduleIndex(Protocol):
    """An optional storage capability: the scheduled dates, answered from an index.

    It answers for the collections with the publish plugin (the only ones the scheduler
    asks about); for another collection an adapter may answer nothing (``[]``, ``None``).
    ``SQLiteStorage`` and ``PostgresStorage`` keep a partial index on each date field's
    key (created in place on existing databases); ``MemoryStorage`` keeps a heap of
    untracked tuples beside the items of each publish-plugin collection. An adapter that
    does not implement it (or sets ``due_items = None``) gets the scheduler's in-memory
    timeline.
    """

    def due_items(
        self,
        collection: str,
        environment: Environment | str,
        now: datetime,
        *,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        """Items whose ``_publishDate`` or ``_draftDate`` is at most ``now``: ``(item id,
        its earlier such date, UTC)`` ordered by ``(date, id)``, at most ``limit``.

        Raises:
            CollectionNotFound, SandboxNotEnabled, InvalidEnvironment: as any read.
            InvalidRequest: ``limit`` is not a positive integer or ``now`` not a datetime.
        """
        ...

    def next_due_date(self, collection: str, environment: Environment | str) -> datetime | None:
        """The earliest scheduled date of the item set (UTC), ``None`` when there is none.

        Raises:
            CollectionNotFound, SandboxNotEnabled, InvalidEnvironment: as any read.
        """
        ...


def has_schedule_index(storage: object) -> bool:
    """Whether ``storage`` answers :class:`ScheduleIndex` (its methods are not ``None``)."""
    return (
        getattr(storage, "due_items", None) is not None
        and getattr(storage, "next_due_date", None) is not None
    )


def due_by_scan(
    storage: Storage,
    collection: str,
    environment: Environment | str,
    now: datetime,
    *,
    limit: int,
) -> list[tuple[str, datetime]]:
    """The reference answer of :meth:`ScheduleIndex.due_items`, from a full scan."""
    check_limit(limit)
    bound = now_key(now)
    rows = []
    for item in storage.find(collection, environment):
        for field in DATE_FIELDS:
            key = date_key(item.get(field))
            if key is not None and key <= bound:
                rows.append((item["_id"], key))
    return merge_due(rows, limit)
