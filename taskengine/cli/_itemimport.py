"""Loading JSON Lines through the storage protocol: for PostgreSQL (and any adapter).

:mod:`taskengine.cli._importer` is SQLite's bulk path (stage in a temporary file, then
one ``INSERT ... SELECT``). On PostgreSQL a long write transaction takes no table lock
(other writers wait only to write the same ``_id`` values, or to drop the collection),
so the import is one pass in one transaction: lines are parsed and inserted 1000 at a
time as they come. After the first bad line nothing more would be kept, but the chunks
still go in (each in its own savepoint) so that *every* bad line is found, ``_id``
values already stored included; then the whole transaction rolls back. Memory holds a
chunk and the ``_id`` values seen (for repeats inside the file), not the documents.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskengine.cli._importer import (
    MAX_LISTED,
    ImportRejected,
    _batches,
    _info,
    _quote,
    check_flags,
)
from taskengine.errors import DuplicateItem
from taskengine.storage.base import CollectionInfo, Environment, Storage
from taskengine.storage.codec import decode

__all__ = ["import_items"]


def import_items(
    storage: Storage,
    lines: Iterable[tuple[int, bytes]],
    collection: str,
    environment: Environment | str,
    *,
    sandbox: bool = False,
    publish_plugin: bool = False,
) -> tuple[int, CollectionInfo | None]:
    """Import numbered JSON Lines into ``collection``, all or nothing (as ``import_jsonl``).

    Raises:
        ImportRejected: bad flags, or bad lines: nothing was written.
        StorageError: the database failed.
    """
    env = Environment.coerce(environment)
    flags = {"sandbox": sandbox, "publish_plugin": publish_plugin}
    seen: dict[str, int] = {}
    problems: dict[int, str] = {}
    imported = 0
    with storage.atomic():
        info = _info(storage, collection)
        check_flags(info, collection, env, **flags)
        created = None if info is not None else storage.create_collection(collection, **flags)
        for rows, bad in _batches(lines):
            problems.update(bad)
            chunk: dict[str, tuple[int, str]] = {}
            for number, item_id, text in rows:
                first = seen.setdefault(item_id, number)
                if first != number:
                    problems[number] = (
                        f"$._id: {_quote(item_id)} appears twice in the file "
                        f"(first on line {first})"
                    )
                else:
                    chunk[item_id] = (number, text)
            imported += _insert(storage, collection, env, chunk, problems)
        if problems:
            listed = sorted(problems.items())[:MAX_LISTED]
            raise ImportRejected(
                f"{len(problems)} bad line(s); nothing imported",
                [f"line {line}: {message}" for line, message in listed],
                len(problems),
            )
    return imported, created


def _insert(
    storage: Storage,
    collection: str,
    env: Environment,
    chunk: dict[str, tuple[int, str]],
    problems: dict[int, str],
) -> int:
    """Insert ``chunk``; an ``_id`` already stored becomes a problem and the rest go in."""
    while chunk:
        try:
            # A nested atomic block is a savepoint: a refused chunk leaves the import's
            # transaction usable.
            with storage.atomic():
                return storage.insert_items(
                    collection, env, [decode(text) for _, text in chunk.values()]
                )
        except DuplicateItem as exc:
            number, _ = chunk.pop(exc.item_id)
            problems[number] = (
                f"$._id: {_quote(exc.item_id)} is already in collection {collection!r}"
                f" ({env.value})"
            )
    return 0
