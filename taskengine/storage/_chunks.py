"""``ChunkedItems``: a sorted map ``_id`` -> frozen item kept in immutable chunks.

The garbage collector's full collections walk every tracked container, and every
reference a tracked container holds. A ``dict`` or a ``SortedList`` of a million items
is one such container (or a thousand), holding a million references: each full
collection then costs tens of milliseconds whatever the items are, and full collections
come more often the fewer long-lived tracked objects there are. Here the ids and the
frozen items (:mod:`taskengine.storage._frozen`) live in *tuples* of up to
:data:`_SPLIT` entries: sorted id tuples and the matching item tuples, untracked by the
collector like the frozen items themselves. Only the three short lists of chunks are
tracked: about ``n / 512`` references each.

A write rebuilds the chunks it touches (a batch of ids in ``_id`` order usually touches
one or two), so a lookup is two bisections, a page is two tuple slices per chunk, and a
consistent snapshot of every item is a copy of the list of item tuples.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain

from taskengine.storage._frozen import Frozen

__all__ = ["ChunkView", "ChunkedItems"]

_LOAD = 512
"""The size of a chunk made by a split."""

_SPLIT = 2 * _LOAD
"""A chunk longer than this is split into chunks of :data:`_LOAD`."""


class ChunkView:
    """A read-only view of a :class:`ChunkedItems`: its chunk lists at one moment.

    A view made by :meth:`ChunkedItems.publish` holds copies of the chunk lists (the
    chunks themselves are immutable), so it stays valid, unchanged, while writes go on:
    a reader may use it without any lock.
    """

    __slots__ = ("keys", "maxes", "size", "vals")

    def __init__(
        self,
        keys: Sequence[tuple[str, ...]],
        vals: Sequence[tuple[Frozen, ...]],
        maxes: Sequence[str],
        size: int,
    ) -> None:
        self.keys = keys
        self.vals = vals
        self.maxes = maxes
        self.size = size

    def get(self, key: str) -> Frozen | None:
        """The frozen item stored under ``key``, or ``None``."""
        maxes = self.maxes
        index = bisect_left(maxes, key)
        if index == len(maxes):
            return None
        keys = self.keys[index]
        position = bisect_left(keys, key)
        if keys[position] == key:  # maxes[index] >= key, so position is in range
            return self.vals[index][position]
        return None

    def page(self, after: str | None, limit: int) -> tuple[list[Frozen], str | None]:
        """The frozen items of the next ``limit`` ids above ``after``, and the cursor.

        The cursor is the last id of the page when more ids follow, else ``None``.
        """
        _, page, cursor = self.page_ids(after, limit)
        return page, cursor

    def page_ids(self, after: str | None, limit: int) -> tuple[list[str], list[Frozen], str | None]:
        """As :meth:`page`, with the ids of the page's items first."""
        maxes, all_keys, all_vals = self.maxes, self.keys, self.vals
        index = 0 if after is None else bisect_right(maxes, after)
        start = 0 if after is None or index == len(maxes) else bisect_right(all_keys[index], after)
        page: list[Frozen] = []
        ids: list[str] = []
        while index < len(maxes) and len(page) <= limit:
            end = start + limit + 1 - len(page)
            ids.extend(all_keys[index][start:end])
            page.extend(all_vals[index][start:end])
            index += 1
            start = 0
        if len(page) > limit:
            del page[limit:], ids[limit:]
            return ids, page, ids[limit - 1]
        return ids, page, None

    def snapshot(self) -> list[tuple[Frozen, ...]]:
        """Every frozen item, as the list of chunk tuples of the view (immutable)."""
        return list(self.vals)


_EMPTY = ChunkView((), (), (), 0)


class ChunkedItems:
    """Frozen items by ``_id``, in ``_id`` order; not thread-safe (the caller locks).

    ``_keys[i]`` is the sorted tuple of ids of chunk ``i``, ``_vals[i]`` their frozen
    items, ``_maxes[i]`` its last id; every id of chunk ``i`` is above every id of chunk
    ``i - 1``, and no chunk is empty. :attr:`published` is the view readers without the
    lock use: the state as of the last :meth:`publish`.
    """

    __slots__ = ("_keys", "_maxes", "_size", "_vals", "published")

    def __init__(self) -> None:
        self._keys: list[tuple[str, ...]] = []
        self._vals: list[tuple[Frozen, ...]] = []
        self._maxes: list[str] = []
        self._size = 0
        self.published: ChunkView = _EMPTY

    def __len__(self) -> int:
        return self._size

    def publish(self) -> None:
        """Make the current state the :attr:`published` view (O(n / 512) references)."""
        self.published = ChunkView(
            tuple(self._keys), tuple(self._vals), tuple(self._maxes), self._size
        )

    def live(self) -> ChunkView:
        """A view of the current state without copies: valid only until the next write."""
        return ChunkView(self._keys, self._vals, self._maxes, self._size)

    def get(self, key: str) -> Frozen | None:
        """The frozen item stored under ``key``, or ``None``."""
        return self.live().get(key)

    def page(self, after: str | None, limit: int) -> tuple[list[Frozen], str | None]:
        """As :meth:`ChunkView.page`, on the current state."""
        return self.live().page(after, limit)

    def snapshot(self) -> list[tuple[Frozen, ...]]:
        """Every frozen item, as the list of chunk tuples of this moment (immutable)."""
        return list(self._vals)

    def ids(self) -> Iterator[str]:
        """Every stored id in order (not safe across writes)."""
        return chain.from_iterable(self._keys)

    def replace(self, batch: Mapping[str, Frozen]) -> dict[str, Frozen]:
        """Overwrite the stored ids of ``batch``; return what they held (others: ignored).

        One bisection per id at most, one new item tuple per chunk touched. A batch of a
        page's ids comes in order, so the next id is first looked for a few places on
        from the last one found, before any bisection.
        """
        maxes, all_keys, all_vals = self._maxes, self._keys, self._vals
        count = len(maxes)
        prior: dict[str, Frozen] = {}
        low, top = "", ""  # the bounds of the current chunk: low < id <= top
        keys: tuple[str, ...] = ()
        size = 0  # len(keys)
        vals: list[Frozen] = []  # the current chunk's items, being overwritten
        index = -1  # the current chunk (-1: none)
        position = -1  # where the last id was found in it
        for key, value in batch.items():
            # The next place, then the one after (a filtered batch skips items).
            position += 1
            if position < size and keys[position] == key:
                prior[key] = vals[position]
                vals[position] = value
                continue
            position += 1
            if position < size and keys[position] == key:
                prior[key] = vals[position]
                vals[position] = value
                continue
            if not low < key <= top:
                if index >= 0:
                    all_vals[index] = tuple(vals)
                index = bisect_left(maxes, key)
                if index == count:  # above every stored id
                    low, top = maxes[-1] if maxes else "", "\U0010ffff" * 8
                    index, keys, size, vals, position = -1, (), 0, [], -1
                    continue
                low, top = (maxes[index - 1] if index else ""), maxes[index]
                keys = all_keys[index]
                size = len(keys)
                vals = list(all_vals[index])
            if index < 0:
                continue
            position = bisect_left(keys, key)  # low < key <= top: position < size
            if keys[position] == key:
                prior[key] = vals[position]
                vals[position] = value
        if index >= 0:
            all_vals[index] = tuple(vals)
        return prior

    def write(self, changes: Mapping[str, Frozen | None]) -> None:
        """Store each ``id -> frozen item``; ``id -> None`` deletes (absent ids: no-op)."""
        if not changes:
            return
        maxes = self._maxes
        if not maxes:
            self._keys.append(())
            self._vals.append(())
            maxes.append("")  # an empty chunk to insert into; _rewrite drops it if unused
        last = len(maxes) - 1
        groups: dict[int, list[tuple[str, Frozen | None]]] = {}
        for key, value in changes.items():
            index = bisect_left(maxes, key)
            if index > last:
                if value is None:
                    continue  # above every stored id: not stored
                index = last
            group = groups.get(index)
            if group is None:
                groups[index] = [(key, value)]
            else:
                group.append((key, value))
        if not groups and not self._keys[last]:
            self._drop(last)
        for index in sorted(groups, reverse=True):  # a split shifts only later chunks
            self._rewrite(index, groups[index])

    def _rewrite(self, index: int, changes: list[tuple[str, Frozen | None]]) -> None:
        keys, vals = self._keys[index], self._vals[index]
        # Overwrites of stored ids only (what a task's batch does): the ids stay.
        updated = list(vals)
        for key, value in changes:
            position = bisect_left(keys, key)
            if value is None or position == len(keys) or keys[position] != key:
                break
            updated[position] = value
        else:
            self._vals[index] = tuple(updated)
            return
        merged = dict(zip(keys, vals, strict=True))
        for key, value in changes:
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self._size += len(merged) - len(keys)
        if not merged:
            self._drop(index)
            return
        new_keys = sorted(merged)
        new_vals = list(map(merged.__getitem__, new_keys))
        step = _LOAD if len(new_keys) > _SPLIT else len(new_keys)
        cuts = range(0, len(new_keys), step)
        self._keys[index : index + 1] = [tuple(new_keys[at : at + step]) for at in cuts]
        self._vals[index : index + 1] = [tuple(new_vals[at : at + step]) for at in cuts]
        self._maxes[index : index + 1] = [
            new_keys[min(at + step, len(new_keys)) - 1] for at in cuts
        ]

    def _drop(self, index: int) -> None:
        del self._keys[index], self._vals[index], self._maxes[index]

    def check(self) -> None:
        """Assert the invariants (see the class docstring)."""
        assert len(self._keys) == len(self._vals) == len(self._maxes)
        previous = None
        total = 0
        for keys, vals, top in zip(self._keys, self._vals, self._maxes, strict=True):
            assert keys
            assert len(keys) == len(vals) <= _SPLIT
            assert type(keys) is tuple
            assert type(vals) is tuple
            assert list(keys) == sorted(set(keys))
            assert keys[-1] == top
            assert previous is None or previous < keys[0]
            previous = top
            total += len(keys)
        assert total == self._size
