"""``PostgresStorage.split_points``: ids that split an item set into ranges of about equal
size, from a walk of the primary key, or from the walk a task's estimate took just before.

A sliced task asks for its estimate (:mod:`taskengine.storage._pgestimate`) and then for
its split points, one after the other, before any slice can start. The estimate walks
the item set's keys once, keeping every 512th (a *grid*, with the exact count); kept for
a few seconds (:class:`WalkMemo`), it gives the split points without a second count and
walk (about 0.1 s of 1M items, time no slice can use). Split points only balance the
slices: any ascending ids are correct, so a walk a few seconds old (a few items written
since) costs at most some balance. The same kept walk serves a delete's key windows
(:mod:`taskengine.storage._pgonepass`) for longer: there a stale walk is found out and
dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from taskengine.storage._estimate import split_by_query
from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgitems import _COUNT, _POINT_AFTER, _POINT_FIRST

__all__ = ["KeyWalk", "WalkMemo", "points_from_walk", "walk_points"]

FRESH_FOR: Final = 5.0
"""Seconds a kept walk serves split points."""
GRID_FRESH_FOR: Final = 600.0
"""Seconds a kept walk serves a delete's windows (:mod:`taskengine.storage._pgonepass`)."""
KEPT: Final = 16
"""Item sets whose last walk is kept (the oldest is forgotten first)."""
KEPT_KEYS: Final = 1_000_000
"""Keys kept in all walks at most (the oldest walks are forgotten first): 1,000,000 keys
of 8 characters take about 70 MB; a walk of 512M items has that many."""


@attrs.frozen
class KeyWalk:
    """Keys spaced evenly over an item set: ``starts[i]`` is about ``i / len(starts)`` of
    the way through it (stored keys, ascending), taken at ``at`` (monotonic seconds).

    ``spacing`` is how many keys lie from one start to the next (``starts[i]`` was the
    key at position ``i * spacing``, counting from 0) when the walk was a grid of fixed
    steps, else 0 (unknown)."""

    coll: int
    env: int
    starts: tuple[str, ...]
    at: float
    spacing: int = 0


class WalkMemo:
    """The last walk of each item set (at most :data:`KEPT` of them; thread-safe): for
    the split points asked right after it (a walk serves one split, within
    :data:`FRESH_FOR` seconds) and for a delete's windows (:meth:`grid`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """An empty memo reading ``clock`` (seconds, monotonic)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._walks: dict[tuple[int, int], KeyWalk] = {}
        self._split: set[tuple[int, int]] = set()  # walks that have not served a split

    def keep(self, coll: int, env: int, starts: Sequence[str], spacing: int = 0) -> None:
        """Keep a walk of the item set ``(coll, env)`` (see :class:`KeyWalk`)."""
        walk = KeyWalk(coll, env, tuple(starts), self._clock(), spacing)
        with self._lock:
            self._walks.pop((coll, env), None)
            self._walks[coll, env] = walk
            self._split.add((coll, env))
            kept = sum(len(walk.starts) for walk in self._walks.values())
            while len(self._walks) > KEPT or kept > KEPT_KEYS:
                oldest = next(iter(self._walks))
                kept -= len(self._walks.pop(oldest).starts)
                self._split.discard(oldest)

    def take(self, coll: int, env: int) -> KeyWalk | None:
        """The kept walk of ``(coll, env)`` for split points, if it is fresh and has not
        served one yet."""
        with self._lock:
            walk = self._walks.get((coll, env))
            if walk is None or (coll, env) not in self._split:
                return None
            self._split.discard((coll, env))
        return walk if self._clock() - walk.at <= FRESH_FOR else None

    def grid(self, coll: int, env: int) -> KeyWalk | None:
        """The kept walk of ``(coll, env)`` for a delete's windows: one of fixed steps
        (``spacing`` known), at most :data:`GRID_FRESH_FOR` seconds old."""
        with self._lock:
            walk = self._walks.get((coll, env))
        if walk is None or not walk.spacing or self._clock() - walk.at > GRID_FRESH_FOR:
            return None
        return walk

    def drop(self, walk: KeyWalk) -> None:
        """Forget ``walk`` (it proved stale), unless a newer one replaced it."""
        with self._lock:
            if self._walks.get((walk.coll, walk.env)) is walk:
                del self._walks[walk.coll, walk.env]
                self._split.discard((walk.coll, walk.env))


def points_from_walk(walk: KeyWalk, parts: int) -> list[str] | None:
    """Up to ``parts - 1`` ascending stored keys from ``walk``, each the walk's key
    nearest to the end of an equal share; ``None`` when the walk is too coarse (fewer
    keys than ``parts``)."""
    starts = walk.starts
    if len(starts) < parts:
        return None
    points: list[str] = []
    for k in range(1, parts):
        at = min(len(starts) - 1, max(1, round(k * len(starts) / parts)))
        if not points or starts[at] > points[-1]:
            points.append(starts[at])
    return points


def walk_points(conn: Connection, coll: int, env: int, parts: int) -> list[str]:
    """Up to ``parts - 1`` stored keys splitting ``(coll, env)`` into ``parts`` ranges of
    about equal size, ascending: a count and one walk of the primary key index
    (:func:`~taskengine.storage._estimate.split_by_query`); no document is read."""
    return split_by_query(
        lambda sql, args: conn.execute(sql, args).fetchall(),
        _COUNT,
        _POINT_FIRST,
        _POINT_AFTER,
        coll,
        env,
        parts,
    )
