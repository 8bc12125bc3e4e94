"""``ScheduledItems``: ``MemoryStorage``'s item set with its scheduled dates indexed.

Every write of a :class:`~taskengine.storage._chunks.ChunkedItems` goes through
:meth:`ChunkedItems.replace` or :meth:`ChunkedItems.write` (an ``atomic()`` rollback
too), so the subclass here sees each frozen item stored and keeps, beside the items:

* ``_heap``: a ``heapq`` of ``(key, id, field number)`` tuples
  (:func:`taskengine.storage.schedule.date_key`), one pushed each time a field's key
  changes (the old and new items are compared; a replace has the old ones at hand).
  The stored items are the truth: an entry whose key is no longer its item's (changed,
  removed, deleted) is stale, dropped when it comes to the top, or all at once when
  stale entries outnumber live ones (amortised O(1) per write).

Every entry is a tuple of an ``int``, a ``str`` and an ``int``, which the garbage
collector stops tracking at its next young collection: a million scheduled dates add one
container (the heap list) to what a full collection walks and never make one happen. A
replace whose items' shapes (old and new, one set of them made in C) hold no date field
costs a few lookups for the whole batch; other writes look up each item's shape's date
positions (cached per shape), and a write over items looks up the old ones only while
the set holds dates.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import chain

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
    keys = (
        None if pub is None else _key(item[pub]),
        None if draft is None else _key(item[draft]),
    )
    return _NO_DATES if keys == _NO_DATES else keys


def _may_hold_dates(items: Iterable[Frozen]) -> bool:
    """Whether any of these frozen items may hold a date field: a shape with one, a shape
    not looked at yet, or shape 0 (items holding their own keys). One set of the shapes,
    made in C: a batch of one shape costs a few lookups, not one per item."""
    slots, known = _slots, len(_slots)
    return any(
        not 0 < shape < known or slots[shape] is not None for shape in {item[0] for item in items}
    )


_last: tuple[object, int | None] = (None, None)


def _key(value: object) -> int | None:
    """:func:`date_key`, remembering the last date seen: a task stores one date object
    on every item it schedules."""
    global _last
    last = _last  # one read: another thread may replace the pair, never half of it
    if last[0] is value:
        return last[1]
    key = date_key(value)
    if key is not None:
        _last = (value, key)
    return key


class ScheduledItems(ChunkedItems):
    """A :class:`ChunkedItems` that also indexes its items' scheduled dates.

    Not thread-safe, like its base: ``MemoryStorage`` holds its lock around every call.
    """

    __slots__ = ("_heap", "_live", "_stale")

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[int, str, int]] = []
        self._live = 0  # date fields stored (each has an entry in the heap)
        self._stale = 0  # entries of the heap that no longer hold (about)

    def replace(self, batch: Mapping[str, Frozen]) -> dict[str, Frozen]:
        """As :meth:`ChunkedItems.replace`; the dates of the items replaced are indexed."""
        prior = super().replace(batch)
        # An item replaced held a date only if some stored item did (``_live``).
        if _may_hold_dates(batch.values()) or (self._live and _may_hold_dates(prior.values())):
            self._index([(item_id, batch[item_id], old) for item_id, old in prior.items()])
        return prior

    def write(self, changes: Mapping[str, Frozen | None]) -> None:
        """As :meth:`ChunkedItems.write`; the dates of the items written are indexed."""
        if self._live:  # an item written over may hold dates: look them up first
            get = self.get
            pairs = [(item_id, new, get(item_id)) for item_id, new in changes.items()]
        else:
            pairs = [(item_id, new, None) for item_id, new in changes.items()]
        super().write(changes)
        self._index(pairs)

    def due(self, bound: int, limit: int) -> list[tuple[str, datetime]]:
        """Up to ``limit`` items with a key at most ``bound``: ``(id, earlier key's date)``
        by ``(key, id)``. Stale entries met on the way are dropped."""
        heap = self._heap
        taken: list[tuple[int, str, int]] = []
        seen: dict[str, int] = {}
        while heap and len(seen) < limit:
            entry = heap[0]
            if entry[0] > bound:
                break
            heapq.heappop(heap)
            if not self._holds(entry):
                self._stale -= 1
                continue
            taken.append(entry)
            seen.setdefault(entry[1], entry[0])
        for entry in taken:
            heapq.heappush(heap, entry)
        return [(item_id, key_date(key)) for item_id, key in seen.items()]

    def next_key(self) -> int | None:
        """The smallest key held, or ``None``. Stale entries on top are dropped."""
        heap = self._heap
        while heap:
            if self._holds(heap[0]):
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def check_schedule(self) -> None:
        """Assert that every stored date has its entry and the count of them is right."""
        expected = {
            (key, item_id, field)
            for item_id, item in zip(self.ids(), chain.from_iterable(self.snapshot()), strict=True)
            for field, key in enumerate(frozen_keys(item))
            if key is not None
        }
        assert expected <= set(self._heap), expected - set(self._heap)
        assert self._live == len(expected), (self._live, len(expected))
        assert all(MIN_KEY <= entry[0] <= MAX_KEY for entry in self._heap)

    def _holds(self, entry: tuple[int, str, int]) -> bool:
        """Whether the stored item still has this date (the entry is not stale)."""
        item = self.get(entry[1])
        return item is not None and frozen_keys(item)[entry[2]] == entry[0]

    def _index(self, pairs: list[tuple[str, Frozen | None, Frozen | None]]) -> None:
        """Push the new keys of ``(id, new item, old item)`` written (``None``: no item)."""
        heap, push, live = self._heap, heapq.heappush, self._live
        for item_id, new_item, old_item in pairs:
            new = _NO_DATES if new_item is None else frozen_keys(new_item)
            old = _NO_DATES if old_item is None else frozen_keys(old_item)
            if old is _NO_DATES:  # the common case: nothing to make stale
                if new is _NO_DATES:
                    continue
                pub, draft = new
                if pub is not None:
                    push(heap, (pub, item_id, 0))
                    live += 1
                if draft is not None:
                    push(heap, (draft, item_id, 1))
                    live += 1
                continue
            for field in (0, 1):
                key, was = new[field], old[field]
                if key != was:
                    if was is not None:
                        live -= 1
                        self._stale += 1
                    if key is not None:
                        live += 1
                        push(heap, (key, item_id, field))
        self._live = live
        if self._stale > _COMPACT_AT and self._stale > live:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale entries (they outnumber the live ones: amortised O(1))."""
        self._heap = sorted(set(filter(self._holds, self._heap)))  # sorted: a heap
        self._stale = 0
