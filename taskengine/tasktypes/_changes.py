"""The built-in task types' per-item changes, in Python and (where exact) as SQL.

Each class here is a :class:`taskengine.storage.changes.ItemChange`: the executor's
``apply`` runs its Python form over a batch (:func:`batch_changes`), and a storage that
changes batches itself (``change_matching``) may run its SQL form instead. The SQL forms
are SQLite's (JSON1 over the codec's JSON text) and are offered only where they are exact,
value for value, against the Python form:

* values are copied and compared as JSON text, never as SQL values: SQLite's ``->``
  gives a value's text as stored (the codec's), ``json_set`` inserts ``json(text)`` as it
  is, and new values are the codec's text of the option value. So no string holding
  U+0000 reaches SQLite as text (where it would stop there), and text equality is
  :func:`identical`, escapes included (SQLite's and the codec's agree), except for
  ``-0.0`` against ``0.0`` (equal, different text): a copy leaves documents holding
  ``-0.0`` anywhere to Python (``applies``);
* field keys become JSON paths bound as parameters, ``$."key"``; a key holding ``"``,
  ``\\`` or a control character has no SQL form.

PostgreSQL stores the codec's text too; its ``jsonb`` cannot print that text, so there a
rewrite is not a ``to_sql`` form but a splice of the stored text that the storage builds
from the change as data (``assignment``, ``array_edit`` of :class:`EditField`, or
``removes`` of :class:`RemoveFields`), exact
row by row where it is provable and the Python form elsewhere
(:mod:`taskengine.storage._pgupdate`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import attrs

from taskengine.storage.changes import ArrayEdit, FieldAssignment, split_outcomes
from taskengine.storage.codec import encode
from taskengine.tasktype import BatchChanges, ItemFailure
from taskengine.tasktypes._fieldops import (
    EditRefused,
    Operations,
    compile_edit,
    copy_item,
    identical,
)

__all__ = [
    "DELETE_MATCHED",
    "CopyField",
    "DeleteMatched",
    "EditField",
    "RemoveFields",
    "SetField",
    "SqlChange",
    "batch_changes",
]

_SQLITE: Final = "sqlite"
_SCALAR_TYPES: Final = (str, int, float, bool, type(None), datetime)
# ``->`` (a value's JSON text as stored) came with SQLite 3.38.
_HAS_ARROW: Final = sqlite3.sqlite_version_info >= (3, 38)
# Documents a SQL form leaves to Python (see the module docstring): ones holding
# ``-0.0`` where values are compared as text.
_NO_NEGATIVE_ZERO: Final = "instr({doc}, '-0.0') = 0"


@attrs.frozen
class SqlChange:
    """A change's SQL form (a :class:`taskengine.storage.changes.SQLChange`)."""

    value: str
    value_params: tuple[Any, ...]
    applies: str
    applies_params: tuple[Any, ...]
    changes: str
    changes_params: tuple[Any, ...]


def _path(key: str) -> str | None:
    """The SQLite JSON path of a top-level key, or ``None`` when it cannot be quoted."""
    if not key or '"' in key or "\\" in key or any(ord(c) < 0x20 for c in key):
        return None
    return f'$."{key}"'


def batch_changes(
    change: Callable[[dict[str, Any]], dict[str, Any] | str | None],
    items: list[dict[str, Any]],
    failure_code: str,
) -> BatchChanges:
    """A batch's :class:`BatchChanges` from a change's Python form (refusals fail with
    ``failure_code``)."""
    writes, unchanged, refused = split_outcomes(change, items)  # type: ignore[arg-type]
    failures = [ItemFailure(item_id, failure_code, reason) for item_id, reason in refused]
    return BatchChanges(replaces=writes, failures=failures, unchanged=unchanged)


@attrs.frozen
class DeleteMatched:
    """Every matched item is deleted (``DELETE_BY_QUERY``)."""

    deletes: bool = attrs.field(default=True, init=False)
    needs_ids: bool = attrs.field(default=False, init=False)

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """Not used: a delete writes no item."""
        raise TypeError("a delete has no per-item form")

    def to_sql(self, backend: str, document: str) -> SqlChange | None:
        """None: a delete needs no document expression."""
        return None


DELETE_MATCHED: Final = DeleteMatched()
"""The change of ``DELETE_BY_QUERY``."""


@attrs.frozen
class SetField:
    """Set a top-level field to a string or a date (publish status and schedule dates).

    A string is unchanged when the stored value ``==`` it; a date when the field holds
    an identical date (same instant and offset).
    """

    field: str
    value: str | datetime
    needs_ids: bool = attrs.field(default=False, kw_only=True)
    deletes: bool = attrs.field(default=False, init=False)

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """The item with the field set, or ``None`` when it already holds the value."""
        field, value = self.field, self.value
        if type(value) is str:
            if item.get(field) == value:
                return None
        elif field in item and identical(item[field], value):
            return None
        item[field] = value
        return item

    @property
    def assignment(self) -> FieldAssignment:
        """The change as data: ``field`` set to ``value``."""
        return FieldAssignment(self.field, self.value)

    def to_sql(self, backend: str, document: str) -> SqlChange | None:
        """SQLite: ``json_set``; the comparison by type and value (text for a date)."""
        path = _path(self.field)
        if backend != _SQLITE or path is None or not _HAS_ARROW:
            return None
        # Compared as the codec's text (a string's escapes are canonical: SQLite's and
        # the codec's agree), so no text holding U+0000 is ever handed to SQLite.
        text = encode({"v": self.value})[5:-1]
        return SqlChange(
            f"json_set({document}, ?, json(?))",
            (path, text),
            "TRUE",  # a string's or a date's text holds no -0.0
            (),
            f"(({document} -> ?) IS NOT ?)",
            (path, text),
        )


@attrs.frozen
class RemoveFields:
    """Remove top-level fields (cancel scheduling); unchanged when none is present."""

    fields: tuple[str, ...]
    needs_ids: bool = attrs.field(default=False, kw_only=True)
    deletes: bool = attrs.field(default=False, init=False)

    @property
    def removes(self) -> tuple[str, ...]:
        """The change as data: the top-level keys it removes (PostgreSQL splices them out
        of the stored text, :mod:`taskengine.storage._pgupdate`)."""
        return self.fields

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """The item without the fields, or ``None`` when it has none of them."""
        if not any(field in item for field in self.fields):
            return None
        for field in self.fields:
            item.pop(field, None)
        return item

    def to_sql(self, backend: str, document: str) -> SqlChange | None:
        """SQLite: ``json_remove``; changed when one of the fields is present."""
        paths = [_path(field) for field in self.fields]
        if backend != _SQLITE or not paths or not _HAS_ARROW:
            return None
        known = [path for path in paths if path is not None]
        if len(known) != len(paths):
            return None
        present = " OR ".join(f"json_type({document}, ?) IS NOT NULL" for _ in known)
        return SqlChange(
            f"json_remove({document}, {', '.join('?' for _ in known)})",
            tuple(known),
            "TRUE",
            (),
            f"({present})",
            tuple(known),
        )


@attrs.frozen
class CopyField:
    """Copy ``source`` into ``target`` (``COPY_FIELD_DATA``): unchanged when the item has
    no source or the target already holds an identical value."""

    source: str
    target: str
    deletes: bool = attrs.field(default=False, init=False)
    needs_ids: bool = attrs.field(default=False, init=False)

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """The item with the copy made, or ``None`` when nothing changes."""
        return item if copy_item(item, self.source, self.target) else None

    @property
    def assignment(self) -> FieldAssignment:
        """The change as data: ``target`` set to the value of ``source``."""
        return FieldAssignment(self.target, source=self.source)

    def to_sql(self, backend: str, document: str) -> SqlChange | None:
        """SQLite: ``json_set(doc, target, doc -> source)``: the value's text as stored."""
        source, target = _path(self.source), _path(self.target)
        if backend != _SQLITE or source is None or target is None or not _HAS_ARROW:
            return None
        return SqlChange(
            f"json_set({document}, ?, {document} -> ?)",
            (target, source),
            _NO_NEGATIVE_ZERO.format(doc=document),
            (),
            f"(json_type({document}, ?) IS NOT NULL"
            f" AND ({document} -> ?) IS NOT ({document} -> ?))",
            (source, target, source),
        )


@attrs.frozen
class EditField:
    """The array operations of ``EDIT_FIELD_DATA`` on one field.

    A refused edit (the field is not an array) fails the item with ``"key: reason"``.
    The SQL form covers ``addItems`` alone (appending to an array, or making one of a
    missing or null field); other operations are done in Python. PostgreSQL splices
    every edit from :attr:`array_edit` (``addItems`` alone from :attr:`assignment`).
    """

    field_key: str
    operations: Operations
    edit: Callable[[dict[str, Any]], bool | EditRefused]
    deletes: bool = attrs.field(default=False, init=False)
    needs_ids: bool = attrs.field(default=False, init=False)

    @classmethod
    def of(cls, field_key: str, operations: Operations) -> EditField:
        """The edit of ``operations`` on ``field_key``, its Python form compiled once."""
        return cls(field_key, operations, compile_edit(field_key, operations))

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        """The edited item, ``None`` when unchanged, or the refusal."""
        outcome = self.edit(item)
        if outcome is True:
            return item
        if outcome is False:
            return None
        assert isinstance(outcome, EditRefused)
        return f"{self.field_key}: {outcome.reason}"

    @property
    def assignment(self) -> FieldAssignment | None:
        """The change as data when it is ``addItems`` of scalars alone: an append."""
        ops = self.operations
        if (
            not ops.add_items
            or ops.remove_items
            or ops.replace_items
            or ops.remove_duplicates
            or not all(type(value) in _SCALAR_TYPES for value in ops.add_items)
        ):
            return None
        return FieldAssignment(self.field_key, tuple(ops.add_items), append=True)

    @property
    def array_edit(self) -> ArrayEdit:
        """The change as data: every operation on the field, in order."""
        ops = self.operations
        return ArrayEdit(
            self.field_key,
            tuple((rule.from_, rule.to) for rule in ops.replace_items),
            tuple(ops.remove_items),
            tuple(ops.add_items),
            ops.remove_duplicates,
        )

    def to_sql(self, backend: str, document: str) -> SqlChange | None:
        """SQLite: ``json_insert(doc, key[#], ...)`` for an array, ``json_set`` of the added
        items for a missing or null field; anything else is left to Python."""
        ops = self.operations
        path = _path(self.field_key)
        if (
            backend != _SQLITE
            or path is None
            or not _HAS_ARROW
            or not ops.add_items
            or ops.remove_items
            or ops.replace_items
            or ops.remove_duplicates
        ):
            return None
        added = [encode({"v": value})[5:-1] for value in ops.add_items]
        appends = ", ".join("?, json(?)" for _ in added)
        append_params: list[Any] = []
        for text in added:
            append_params += [f"{path}[#]", text]
        kind = f"json_type({document}, ?)"
        return SqlChange(
            f"CASE {kind} WHEN 'array' THEN json_insert({document}, {appends})"
            f" ELSE json_set({document}, ?, json(?)) END",
            (path, *append_params, path, "[" + ",".join(added) + "]"),
            f"({kind} IS NULL OR {kind} IN ('array', 'null'))",
            (path, path),
            "TRUE",
            (),
        )
