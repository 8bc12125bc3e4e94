"""``ScheduledItems``: ``MemoryStorage``'s item set with its scheduled dates indexed.

Every write of a :class:`~taskengine.storage._chunks.ChunkedItems` goes through
:meth:`ChunkedItems.replace` or :meth:`ChunkedItems.write` (an ``atomic()`` rollback
too), so the subclass here sees each frozen item stored and keeps, beside the items:

* ``_dates``: ``{id: (publish key, draft key)}`` for the items holding at least one
  scheduled date (:func:`taskengine.storage.schedule.date_key`), the truth;
* ``_heap``: a ``heapq`` of ``(key, id, field number)`` tuples, one pushed each time a
  field's key changes. An entry whose key is no longer the item's (changed, removed,
  deleted) is stale: dropped when it comes to the top, or when stale entries make up
  half of the heap (rebuilt from ``_dates``, amortised O(1) per push).

Every entry is a tuple of an ``int`` and two ``str``/``int`` values, which the garbage
collector stops tracking at its next young collection: a million scheduled dates add two
containers (the dict and the heap list) to what a full collection walks and never make
one happen. An item without a date costs one lookup of its shape's date positions
(cached per shape) on each write, plus a dict lookup when the set holds dates.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping
from datetime import datetime

from taskengine.storage._chunks import ChunkedItems
from taskengine.storage._frozen import Frozen, shape_keys
from taskengine.storage.schedule import (
    DRAFT_DATE,
    MAX_KEY,
    MIN_KEY,
    PUBLISH_DATE,
    date_key,
    key_date,
)

__all__ = ["ScheduledItems"]

_NO_DATES: tuple[int | None, int | None] = (None, None)
_COMPACT_AT = 4096  # the heap is never rebuilt below this many entries

# Per shape number: the positions of _publishDate and _draftDate in a frozen item of that
# shape (None: absent), or None when the shape has neither; a shape not looked at yet is
# past the end. Shape numbers are never reused, so the list only grows (under a lock);
# reads need none.
_Slots = tuple[int | None, int | None]
_slots: list[_Slots | None] = []
_slots_lock = threading.Lock()


def _positions(keys: tuple[str, ...], first: int) -> _Slots | None:
    pub = keys.index(PUBLISH_DATE) + first if PUBLISH_DATE in keys else None
    draft = keys.index(DRAFT_DATE) + first if DRAFT_DATE in keys else None
    return None if pub is None and draft is None else (pub, draft)


def _shape_slots(shape: int) -> _Slots | None:
    with _slots_lock:  # stores of other MemoryStorage instances may grow it at once
        while len(_slots) <= shape:
            _slots.append(_positions(shape_keys[len(_slots)], 1) if _slots else None)
    return _slots[shape]


def frozen_keys(item: Frozen) -> tuple[int | None, int | None]:
    """The keys of a frozen item's two date fields (``(None, None)`` without dates)."""
    shape: int = item[0]
    if shape:
        slots = _slots[shape] if shape < len(_slots) else _shape_slots(shape)
    else:
        slots = _positions(item[1], 2)
    if slots is None:
        return _NO_DATES
    pub, draft = slots
    return (
        None if pub is None else date_key(item[pub]),
        None if draft is None else date_key(item[draft]),
    )


class ScheduledItems(ChunkedItems):
    """A :class:`ChunkedItems` that also indexes its items' scheduled dates.

    Not thread-safe, like its base: ``MemoryStorage`` holds its lock around every call.
    """

    __slots__ = ("_dates", "_heap", "_stale")

    def __init__(self) -> None:
        super().__init__()
        self._dates: dict[str, tuple[int | None, int | None]] = {}
        self._heap: list[tuple[int, str, int]] = []
        self._stale = 0

    def replace(self, batch: Mapping[str, Frozen]) -> dict[str, Frozen]:
        """As :meth:`ChunkedItems.replace`; the dates of the items replaced are indexed."""
        prior = super().replace(batch)
        if len(prior) == len(batch):
            self._index(batch)
        else:
            self._index({key: value for key, value in batch.items() if key in prior})
        return prior

    def write(self, changes: Mapping[str, Frozen | None]) -> None:
        """As :meth:`ChunkedItems.write`; the dates of the items written are indexed."""
        super().write(changes)
        self._index(changes)

    def due(self, bound: int, limit: int) -> list[tuple[str, datetime]]:
        """Up to ``limit`` items with a key at most ``bound``: ``(id, earlier key's date)``
        by ``(key, id)``. Stale entries met on the way are dropped."""
        heap, keys = self._heap, self._dates
        taken: list[tuple[int, str, int]] = []
        seen: dict[str, int] = {}
        while heap and len(seen) < limit:
            entry = heap[0]
            key, item_id, field = entry
            if key > bound:
                break
            heapq.heappop(heap)
            current = keys.get(item_id)
            if current is None or current[field] != key:
                self._stale -= 1
                continue
            taken.append(entry)
            if item_id not in seen:
                seen[item_id] = key
        for entry in taken:
            heapq.heappush(heap, entry)
        return [(item_id, key_date(key)) for item_id, key in seen.items()]

    def next_key(self) -> int | None:
        """The smallest key held, or ``None``. Stale entries on top are dropped."""
        heap, keys = self._heap, self._dates
        while heap:
            key, item_id, field = heap[0]
            current = keys.get(item_id)
            if current is not None and current[field] == key:
                return key
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def check_schedule(self) -> None:
        """Assert that the index holds exactly the dates of the stored items."""
        expected = {}
        for item_id, chunk in zip(self.ids(), (i for c in self.snapshot() for i in c), strict=True):
            found = frozen_keys(chunk)
            if found != _NO_DATES:
                expected[item_id] = found
        assert self._dates == expected, (self._dates, expected)
        live = {
            (key, item_id, field)
            for item_id, pair in expected.items()
            for field, key in enumerate(pair)
            if key is not None
        }
        assert live <= set(self._heap)
        assert all(MIN_KEY <= entry[0] <= MAX_KEY for entry in self._heap)

    def _index(self, changes: Mapping[str, Frozen | None]) -> None:
        keys, heap = self._dates, self._heap
        push = heapq.heappush
        for item_id, item in changes.items():
            new = _NO_DATES if item is None else frozen_keys(item)
            old = keys.get(item_id) if keys else None
            if old is None:
                if new is _NO_DATES or new == _NO_DATES:
                    continue
                old = _NO_DATES
            elif new == old:
                continue
            if new == _NO_DATES:
                del keys[item_id]
            else:
                keys[item_id] = new
            for field in (0, 1):
                key, was = new[field], old[field]
                if key != was:
                    if was is not None:
                        self._stale += 1
                    if key is not None:
                        push(heap, (key, item_id, field))
        if self._stale > _COMPACT_AT and 2 * self._stale > len(heap):
            self._compact()

    def _compact(self) -> None:
        keys = self._dates
        self._heap = [
            (key, item_id, field)
            for item_id, pair in keys.items()
            for field, key in enumerate(pair)
            if key is not None
        ]
        heapq.heapify(self._heap)
        self._stale = 0
