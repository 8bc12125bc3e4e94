"""The storage protocol: the only way the engine reads and writes items.

An *item* is a ``dict[str, Any]`` with a non-empty string ``_id``; its values are
JSON-like (``str``, ``int`` in the signed 64-bit range, finite ``float``, ``bool``,
``None``, ``list``, ``dict`` with ``str`` keys) plus ``datetime.datetime``. Items live in
*collections*, and each collection has a ``LIVE`` item set and, when the sandbox is
enabled, a separate ``SANDBOX`` item set.

:class:`Storage` is a :class:`typing.Protocol` of record-level primitives. The derived
methods (:meth:`Storage.count`, :meth:`Storage.get_item`, :meth:`Storage.find`,
:meth:`Storage.atomic`) have default bodies written on top of :meth:`Storage.scan`, so
an adapter that subclasses :class:`Storage` explicitly only has to write eight methods;
it may override the derived ones for speed. ``taskengine.testing`` checks the contract.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import attrs

from taskengine.errors import InvalidEnvironment, InvalidItem, InvalidRequest, Violation

__all__ = [
    "CollectionInfo",
    "Count",
    "Environment",
    "Item",
    "ItemFilter",
    "Page",
    "SQLFilter",
    "SQLFilterCondition",
    "SplittingStorage",
    "Storage",
    "WriteResult",
    "check_after",
    "check_limit",
    "check_name",
]

Item = dict[str, Any]
"""One stored record: a JSON-like dict with a string ``_id``."""

ItemFilter = Callable[[Mapping[str, Any]], bool]
"""A predicate over items; a compiled ``taskengine.Filter`` is one."""

_PAGE = 1000


class SQLFilterCondition(Protocol):
    """A filter translated to SQL for one database (what :meth:`SQLFilter.to_sql` returns).

    ``where`` holds on every item the filter accepts, so a query may drop the rows that
    fail it; ``sure`` holds only on items the filter accepts, so those need no check in
    Python; rows between the two must be checked with the filter itself. ``exact`` says
    the two are one condition. Each is SQL text with the backend's placeholders and its
    parameters in placeholder order, to be ``AND``-ed into a query.
    """

    @property
    def where(self) -> str:
        """The necessary condition."""
        ...

    @property
    def where_params(self) -> tuple[Any, ...]:
        """The parameters of :attr:`where`."""
        ...

    @property
    def sure(self) -> str:
        """The sufficient condition."""
        ...

    @property
    def sure_params(self) -> tuple[Any, ...]:
        """The parameters of :attr:`sure`."""
        ...

    @property
    def exact(self) -> bool:
        """Whether :attr:`where` and :attr:`sure` are one condition."""
        ...


@runtime_checkable
class SQLFilter(Protocol):
    """An item filter that can also run inside a SQL database (a compiled filter is one).

    Storage knows no filter language; a SQL adapter asks a filter it is given, by this
    method, for a condition over its document column, and checks in Python whatever the
    condition leaves undecided. ``to_sql`` returns ``None`` when it has nothing to offer
    for that ``backend`` (``"sqlite"``: JSON1 over JSON text; ``"postgresql"``: JSONB).
    """

    def __call__(self, item: Mapping[str, Any], /) -> bool:
        """Whether the filter accepts ``item``."""
        ...

    def to_sql(self, backend: str, document: str) -> SQLFilterCondition | None:
        """The filter as a condition over the SQL expression ``document``, or ``None``."""
        ...


class Environment(str, enum.Enum):
    """Which item set of a collection: the live items or the sandbox copy."""

    LIVE = "LIVE"
    SANDBOX = "SANDBOX"

    @classmethod
    def coerce(cls, value: object) -> Environment:
        """Return the member for ``value`` (a member or its exact name).

        Raises:
            InvalidEnvironment: for anything else, including ``"SANDBOX_PREFERRED"``
                (resolving that is the engine's job) and lower-case names.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise InvalidEnvironment(value, [member.value for member in cls])


@attrs.frozen
class CollectionInfo:
    """What the storage knows about a collection besides its items."""

    name: str
    sandbox_enabled: bool
    publish_plugin: bool


@attrs.frozen
class Page:
    """One page of a scan.

    Attributes:
        items: fresh copies of the items, in ascending ``_id`` order.
        cursor: the ``after`` for the next call, ``None`` when nothing is left. It may be
            past the last returned item when the adapter skipped items a filter rejected.
    """

    items: list[Item]
    cursor: str | None


@attrs.frozen
class Count:
    """A number of items, and whether it is exact or an estimate."""

    value: int
    exact: bool


@attrs.frozen
class WriteResult:
    """Per-item outcome of a batched write: ids written, and ids that were not stored."""

    done: tuple[str, ...]
    missing: tuple[str, ...]


def check_limit(limit: object) -> int:
    """Return ``limit`` when it is a positive ``int``, else raise ``InvalidRequest``."""
    if type(limit) is not int or limit < 1:
        raise InvalidRequest([Violation("limit", f"must be a positive integer, got {limit!r}")])
    return limit


def check_after(after: object) -> str | None:
    """Return a scan cursor when it is ``None`` or a ``str``, else raise ``InvalidRequest``."""
    if after is not None and type(after) is not str:
        raise InvalidRequest(
            [Violation("after", f"must be an _id string or None, got {type(after).__name__}")]
        )
    return after


def check_name(name: object) -> str:
    """Return a collection name when it is a non-empty ``str``, else raise ``InvalidRequest``."""
    if type(name) is not str or not name:
        raise InvalidRequest(
            [Violation("name", f"a collection name must be a non-empty string, got {name!r}")]
        )
    return name


@runtime_checkable
class Storage(Protocol):
    """Items by collection and environment, scanned in ``_id`` order, written in batches.

    The contract every adapter keeps (``taskengine.testing.StorageConformance`` checks it):

    * **Ordering.** Scans and :meth:`find` return items in ascending ``_id`` order, where
      order is Python ``str`` order (code point order).
    * **Copies.** Items handed in are copied; items handed out are fresh copies. Mutating
      either never changes the store.
    * **Values round-trip exactly**: ``str``, ``int`` (signed 64-bit), ``float``
      (``-0.0`` included), ``bool``, ``None``, lists, dicts (key order kept) and
      ``datetime`` (naive stays naive, an aware one keeps its UTC offset, microseconds
      kept). A dict that is exactly ``{"$date": "<ISO-8601>"}`` is a date and comes back
      as a ``datetime``. Anything else (NaN or infinite floats, ints outside 64 bits,
      tuples, sets, bytes, non-``str`` keys, strings that are not valid Unicode, other
      objects) raises ``InvalidItem`` naming the path.
    * **Environments.** Every method taking an environment accepts an
      :class:`Environment` or its name; anything else raises ``InvalidEnvironment``.
      ``SANDBOX`` of a collection without a sandbox raises ``SandboxNotEnabled``. An
      unknown collection raises ``CollectionNotFound``.
    * **Writes.** :meth:`insert_items` is all or nothing. :meth:`replace_items` and
      :meth:`delete_items` take one batch; an id that is not stored is reported in
      ``WriteResult.missing`` (never an exception, never inserted). A bad item in a
      replace batch raises ``InvalidItem`` before anything is written.
    * **Errors.** Driver errors never escape: they become ``StorageError``.
    * **Atomic blocks.** :meth:`atomic` isolates a block of writes. An adapter whose
      block also *rolls back* (an exception leaving the block undoes every write made in
      it, nested blocks undoing only their own writes when their exception is caught)
      says so with ``atomic_rolls_back = True``; the conformance suite then checks it.
      The engine relies on the claim: after a ``StorageError`` in a batch it retries the
      whole batch only on an adapter that rolls back. On any other adapter it reads the
      batch's items back, rewrites only those it can prove were not written, and when the
      retries run out fails the task with counters that count exactly the items it found
      written, so no change is ever applied twice.
    * **Declared capabilities.** Class attributes say what the adapter guarantees or
      prefers beyond this contract; the engine reads them and never guesses from the
      adapter's class: :attr:`atomic_rolls_back` (above), :attr:`scan_filters_exactly`
      (a scan with a filter returns only items the filter accepts, so the engine need not
      check each item again) and :attr:`batches_by_time` (set-based batches may grow
      with their speed). All default to ``False``, which is always safe.
    """

    atomic_rolls_back: bool = False
    """Whether an exception leaving :meth:`atomic` undoes every write of the block.

    Declare ``True`` only when it holds for every write method (the conformance suite
    checks it); the default ``False`` is always safe. A subclass that overrides
    :meth:`atomic` or a write method of an adapter that rolls back must say again.
    """

    batches_by_time: bool = False
    """Whether the engine may size this adapter's set-based batches
    (``ChangingStorage.change_matching``) by time, as ``TaskEngine(set_batch_seconds=...)``
    says, instead of keeping every one at ``set_batch_size`` rows.

    Declare ``True`` where much of a batch's cost is per batch (round trips to a server,
    a commit), so that larger batches go faster, and a batch of ``set_batch_seconds``
    keeps nobody waiting too long (``SQLiteStorage``, ``PostgresStorage``). The default
    ``False`` keeps the rows fixed: ``MemoryStorage`` says so, as a batch there costs
    little beyond its rows and holds the lock its readers wait for.
    """

    scan_filters_exactly: bool = False
    """Whether :meth:`scan` with a ``filter`` returns only items the filter accepts.

    The protocol lets a scan return items its filter rejects (the caller re-checks);
    an adapter that never does declares ``True`` and saves the engine one filter call
    per item. A subclass that overrides :meth:`scan` of such an adapter must say again.
    """

    def create_collection(
        self, name: str, *, sandbox: bool = False, publish_plugin: bool = False
    ) -> CollectionInfo:
        """Create an empty collection.

        Raises:
            CollectionExists: a collection with this name exists.
        """
        ...

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection.

        Raises:
            CollectionNotFound: no collection has this name.
        """
        ...

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""
        ...

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its items, in both environments.

        Raises:
            CollectionNotFound: no collection has this name.
        """
        ...

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = _PAGE,
        filter: ItemFilter | None = None,
    ) -> Page:
        """Items with ``_id > after`` in ascending ``_id`` order, at most ``limit`` of them.

        The adapter MAY drop items that ``filter`` rejects (never one it accepts); the
        caller re-checks. Pass the returned cursor as ``after`` to continue; ``None``
        means the scan is finished. A page may be empty while the cursor is not ``None``.

        Raises:
            InvalidRequest: ``limit`` is not a positive integer.
        """
        ...

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items and return how many; all or nothing.

        Raises:
            InvalidItem: an item without a non-empty string ``_id`` or with a value that
                cannot be stored; nothing is inserted.
            DuplicateItem: an ``_id`` already stored or repeated in ``items``; nothing is
                inserted.
        """
        ...

    def replace_items(
        self,
        collection: str,
        environment: Environment | str,
        items: Sequence[Mapping[str, Any]],
    ) -> WriteResult:
        """Overwrite stored items by ``_id``; ids not stored are reported as missing.

        When an ``_id`` repeats in the batch, the last item wins and the id is reported
        once.

        Raises:
            InvalidItem: an item that cannot be stored; nothing is written.
        """
        ...

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id``; ids not stored are reported as missing (each id once).

        Raises:
            InvalidItem: an id that is not a string; nothing is deleted.
        """
        ...

    # -- derived: defaults built on scan; adapters may override them for speed ----------

    def count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """How many items (that ``filter`` accepts), exact or estimated (said which)."""
        total = 0
        for _ in self.find(collection, environment, filter):
            total += 1
        return Count(total, exact=True)

    def estimate_count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """A cheap count of the items ``filter`` accepts, for a task's
        ``estimatedItemCount``: exact, or an estimate (``Count.exact`` says which).

        The engine asks once, when a task starts, instead of :meth:`count`, which may be
        a full pass as long as the task itself. This default counts exactly; the SQL
        adapters estimate large item sets from a sample. An adapter that does not
        define it is counted with :meth:`count`.
        """
        return self.count(collection, environment, filter)

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        if not isinstance(item_id, str):
            raise InvalidItem(f"_id must be a string, got {type(item_id).__name__}", path="_id")
        for item in self.find(collection, environment):
            if item["_id"] == item_id:
                return item
            if item["_id"] > item_id:
                break
        return None

    def find(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Iterator[Item]:
        """Every item ``filter`` accepts, in ascending ``_id`` order, as fresh copies.

        Collection and environment errors are raised by the call, not by the first
        ``next()``. The iterator pages through :meth:`scan`, so writes made while it is
        consumed may or may not be seen.
        """
        first = self.scan(collection, environment, limit=_PAGE, filter=filter)
        return _iterate_pages(self, collection, environment, filter, first)

    def atomic(self) -> AbstractContextManager[None]:
        """A block whose writes commit together or not at all, if the adapter can.

        Exceptions raised inside propagate unchanged. The default gives no guarantee (a
        null context); adapters that can, override it and set ``atomic_rolls_back``.
        """
        return contextlib.nullcontext()


@runtime_checkable
class SplittingStorage(Protocol):
    """A storage that can split an item set into ``_id`` ranges cheaply (an optional
    capability, duck-typed: a ``split_points`` method), so a task can run in slices
    (docs/slices.md). An adapter without it runs sliced tasks unsliced.
    """

    def split_points(
        self, collection: str, environment: Environment | str, parts: int
    ) -> list[str]:
        """Up to ``parts - 1`` stored ids, strictly ascending in the scan's ``_id`` order,
        that split the item set into ``parts`` ranges of about equal size: range ``k``
        holds the ids above point ``k - 1`` (or all from the start) up to point ``k``
        (inclusive; the last range runs to the end). Fewer points (none) for an item set
        with fewer items than ``parts``. Costs an index walk, never a decode of every
        item.

        Raises:
            CollectionNotFound: no such collection.
            SandboxNotEnabled: ``SANDBOX`` on a collection without a sandbox.
        """
        ...


def _iterate_pages(
    storage: Storage,
    collection: str,
    environment: Environment | str,
    filter: ItemFilter | None,
    page: Page,
) -> Iterator[Item]:
    while True:
        for item in page.items:
            if filter is None or filter(item):
                yield item
        if page.cursor is None:
            return
        page = storage.scan(collection, environment, after=page.cursor, filter=filter)
