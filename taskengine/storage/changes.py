"""Set-based batches: a storage that changes the items of a batch itself.

The engine's batch loop reads a page of items, lets the executor turn it into writes and
writes them back, so every item crosses into Python and back. A task type whose per-item
change can be stated as an :class:`ItemChange` (the built-in ones can) lets a storage that
implements :class:`ChangingStorage` run the whole batch itself: a SQL adapter runs one
statement over the batch's ``_id`` range with the change's SQL form
(:meth:`ItemChange.to_sql`), and only the items the database cannot decide exactly (rows
a filter's SQL form leaves undecided, rows outside a change's ``applies`` condition) go
through the change's Python form. Either way the outcome must be exactly the scan path's:
the same items written with the same values, the same counters, the same refusals. An
adapter may implement the capability or ignore it; :func:`change_by_scan` is the
reference, the same batch built on :meth:`Storage.scan` and the batched writes, which any
adapter may return as its own answer for changes it cannot do better.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from taskengine.storage.base import Environment, Item, ItemFilter, Page, Storage

__all__ = [
    "ArrayEdit",
    "ChangeResult",
    "ChangingStorage",
    "FieldAssignment",
    "ItemChange",
    "SQLChange",
    "change_by_scan",
    "cut_at",
    "keep_only_if_unchanged",
    "split_outcomes",
]


class SQLChange(Protocol):
    """An :class:`ItemChange` as SQL over one database's document column.

    On rows meeting ``applies``, the new document is ``value`` (what the Python form
    would write, value for value) and ``changes`` says whether it differs from the stored
    one (rows where it does not are counted unchanged and not written). Rows where
    ``applies`` does not hold must go through the Python form. Each part is SQL text with
    the backend's placeholders, and its parameters in placeholder order. ``applies``
    must still hold on a row after ``value`` was written to it (an adapter may look for
    the rows outside it after the statement).
    """

    @property
    def value(self) -> str:
        """The new document."""
        ...

    @property
    def value_params(self) -> tuple[Any, ...]:
        """The parameters of :attr:`value`."""
        ...

    @property
    def applies(self) -> str:
        """Where :attr:`value` is exact."""
        ...

    @property
    def applies_params(self) -> tuple[Any, ...]:
        """The parameters of :attr:`applies`."""
        ...

    @property
    def changes(self) -> str:
        """Where :attr:`value` differs from the stored document."""
        ...

    @property
    def changes_params(self) -> tuple[Any, ...]:
        """The parameters of :attr:`changes`."""
        ...


@runtime_checkable
class ItemChange(Protocol):
    """What a batch does to every item it matches: delete it, or rewrite it.

    ``deletes`` true: every matched item is deleted (the call and ``to_sql`` are not
    used). ``needs_ids`` false lets an adapter report how many items it wrote without
    their ids (``ChangeResult.written``): collecting them can cost as much as the write.
    Otherwise calling the change with a matched item (a fresh copy it may mutate)
    returns the item to write, ``None`` to leave it as it is (counted unchanged), or a
    ``str``: why it is refused (the item is counted failed and not written).
    """

    @property
    def deletes(self) -> bool:
        """Whether matched items are deleted rather than rewritten."""
        ...

    @property
    def needs_ids(self) -> bool:
        """Whether the ids of the items written must be reported (``ChangeResult.done``)."""
        ...

    def __call__(self, item: Item, /) -> Item | str | None:
        """The item's new content, ``None`` (unchanged), or the reason it is refused."""
        ...

    def to_sql(self, backend: str, document: str) -> SQLChange | None:
        """The change over the SQL expression ``document`` for ``backend``, or ``None``."""
        ...


@attrs.frozen
class ChangeResult:
    """What one set-based batch did.

    Attributes:
        cursor: the ``after`` of the next batch; ``None`` when the scan is finished.
        written: how many items were deleted or rewritten.
        done: their ids; complete when the change ``needs_ids``, else possibly partial
            (an adapter may leave out the ones a statement wrote).
        unchanged: matched items the change left as they were.
        refused: ``(id, reason)`` of the items the change refused (not written).
        missing: ids of matched items that were gone by the time of the write.
    """

    cursor: str | None
    written: int
    done: tuple[str, ...] = ()
    unchanged: int = 0
    refused: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()


@runtime_checkable
class ChangingStorage(Protocol):
    """A storage that can run a batch's change itself (an optional capability).

    The engine looks the method up on the adapter's class, never through an instance's
    ``__getattr__``, so a wrapper delegating to another adapter keeps its own writes. A
    subclass that overrides :meth:`Storage.scan` or a write method of an adapter with
    this capability must override ``change_matching`` too, or set it to ``None``; the
    bundled adapters do the latter by themselves (:func:`keep_only_if_unchanged`).
    """

    def change_matching(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None,
        limit: int,
        filter: ItemFilter | None,
        change: ItemChange,
        until: str | None = None,
    ) -> ChangeResult:
        """Apply ``change`` to the next batch: the items ``filter`` accepts after
        ``after``, at most ``limit`` of them, in ``_id`` order.

        With ``until`` (a slice's last id, docs/slices.md) items above it are not part of
        the scan: the batch stops there, and the cursor is ``None`` once the batch
        reached it.

        The batch is one page of :meth:`Storage.scan` with this filter and limit, or a
        prefix of one (a SQL adapter may bound a batch by ``limit`` candidate rows rather
        than ``limit`` accepted items); the result must be what :func:`change_by_scan`
        gives for the items the batch covers. The engine calls it inside
        :meth:`Storage.atomic`, with the batch's checkpoint written in the same block,
        and only on an adapter whose block rolls back.

        Raises:
            InvalidItem: the change returned an item that cannot be stored; nothing of
                the batch is written.
        """
        ...


def keep_only_if_unchanged(cls: type, base: type) -> None:
    """For an adapter's ``__init_subclass__``: a subclass of ``base`` that overrides
    :meth:`Storage.scan`, :meth:`Storage.replace_items` or :meth:`Storage.delete_items`
    but not ``change_matching`` loses the capability (``change_matching = None``), so the
    engine runs its batches through the methods it overrides."""
    if "change_matching" not in cls.__dict__ and any(
        getattr(cls, name) is not getattr(base, name)
        for name in ("scan", "replace_items", "delete_items")
    ):
        cls.change_matching = None  # type: ignore[attr-defined]


def split_outcomes(
    change: ItemChange, items: list[Item]
) -> tuple[list[Item], int, list[tuple[str, str]]]:
    """Run the Python form of ``change`` over matched ``items``.

    Returns ``(items to write, how many are unchanged, (id, reason) of the refused)``.
    """
    writes: list[Item] = []
    refused: list[tuple[str, str]] = []
    unchanged = 0
    for item in items:
        item_id = item["_id"]
        outcome = change(item)
        if outcome is None:
            unchanged += 1
        elif type(outcome) is str:
            refused.append((item_id, outcome))
        else:
            assert isinstance(outcome, Mapping)
            writes.append(outcome)
    return writes, unchanged, refused


def cut_at(items: list[Item], cursor: str | None, until: str) -> tuple[list[Item], str | None]:
    """A scan page cut at a slice's last id: the items up to ``until`` (inclusive), and
    the cursor, ``None`` once the page reached ``until`` (the slice is done).

    Ids compare as Python strings (code point order), the ``_id`` order of every bundled
    adapter's scan (the storage contract's order).
    """
    if cursor is not None and cursor < until:
        return items, cursor
    if items and items[-1]["_id"] > until:
        items = [item for item in items if item["_id"] <= until]
    return items, None


def change_by_scan(
    storage: Storage,
    collection: str,
    environment: Environment | str,
    *,
    after: str | None,
    limit: int,
    filter: ItemFilter | None,
    change: ItemChange,
    until: str | None = None,
) -> ChangeResult:
    """The reference set-based batch: one :meth:`Storage.scan` page (cut at ``until``),
    the change applied in Python, the writes made with :meth:`Storage.delete_items` /
    :meth:`Storage.replace_items`."""
    page = storage.scan(collection, environment, after=after, limit=limit, filter=filter)
    if until is not None:
        page = Page(*cut_at(page.items, page.cursor, until))
    items = page.items
    if filter is not None and getattr(storage, "scan_filters_exactly", False) is not True:
        items = [item for item in items if filter(item)]
    if change.deletes:
        if not items:
            return ChangeResult(page.cursor, 0)
        deleted = storage.delete_items(collection, environment, [i["_id"] for i in items])
        return ChangeResult(page.cursor, len(deleted.done), deleted.done, missing=deleted.missing)
    writes, unchanged, refused = split_outcomes(change, items)
    done: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    if writes:
        written = storage.replace_items(collection, environment, writes)
        done, missing = written.done, written.missing
    return ChangeResult(page.cursor, len(done), done, unchanged, tuple(refused), missing)


@attrs.frozen
class FieldAssignment:
    """A change that only sets one top-level field, said as data (optional on an
    :class:`ItemChange`, as its ``assignment`` attribute).

    The change must be exactly this, in place when ``target`` is present, else as the
    last key:

    * ``append`` false: the item with ``target`` set to ``value`` (or, when ``source``
      is given, to the item's ``source`` value); unchanged (``None``) when ``source`` is
      given and absent, or when ``target`` already holds an identical value (same types,
      keys in the same order, dates with the same offset). Nothing is refused.
    * ``append`` true: ``value`` is a non-empty tuple of scalars appended to the array
      in ``target``; a missing or ``null`` target becomes the array of them. When
      ``target`` holds anything else, only the change's Python form says what happens.

    A storage may apply it to its own form of the items instead of calling the change
    (``MemoryStorage`` rewrites its frozen tuples without copying the item); a storage
    that ignores it calls the change, with the same result.

    Attributes:
        target: the key set.
        value: the new value when ``source`` is ``None`` (a ``str`` or a ``datetime``),
            or the values appended.
        source: the key whose value is copied, or ``None``.
        append: whether ``value`` is appended to an array rather than set.
    """

    target: str
    value: Any = None
    source: str | None = None
    append: bool = False


@attrs.frozen
class ArrayEdit:
    """A change that only edits the array in one top-level field, said as data (optional
    on an :class:`ItemChange`, as its ``array_edit`` attribute): ``EDIT_FIELD_DATA``.

    The change must be exactly this, with equality the filter language's
    (``taskengine._values.values_equal``: type-strict, ``1 == 1.0``, dates by instant,
    dicts by content), applied in this order to the field's value (a missing or ``null``
    field is the empty array):

    * ``replace``: each element equal to the first ``from`` of a pair becomes that pair's
      ``to`` (the first matching pair wins); a value that is not an array is replaced
      whole when it equals a ``from``;
    * ``remove``: elements equal to one of these are dropped;
    * ``add``: these are appended in order;
    * ``dedupe``: of equal elements, the first is kept.

    The last three need an array: on any other value (not missing, not ``null``) the item
    is refused and left as it was. The item is unchanged (``None``, nothing written, a
    missing field not created) when a missing or ``null`` field stays empty or the new
    value is identical to the old one (same types, keys in the same order, dates with
    the same offset); otherwise the field is set in place, or as the last key when it was
    missing. A storage that ignores this calls the change, with the same result.

    Attributes:
        field: the key of the field edited.
        replace: ``(from, to)`` pairs, in order.
        remove: the values removed.
        add: the values appended.
        dedupe: whether duplicates are removed.
    """

    field: str
    replace: tuple[tuple[Any, Any], ...] = ()
    remove: tuple[Any, ...] = ()
    add: tuple[Any, ...] = ()
    dedupe: bool = False
