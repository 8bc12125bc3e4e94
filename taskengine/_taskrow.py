"""The SQLite task store's row format: a task as one row, and back (see docs/durability.md).

The row format belongs to the task store, not to the public task JSON, so that a change
to the API JSON never changes the file users have. Since version 2 a task is one column
per field of :class:`~taskengine.task.Task` (version 3 adds the lease columns, which belong
to the store's ownership operations, not to the task, and are not written here):

=====================  ==================================================================
column                 value
=====================  ==================================================================
``id``, ``type``       text
``status``             ``NEW``, ``RUNNING``, ``COMPLETED`` or ``FAILED``
``created_at`` ...     ``created_at``, ``started_at``, ``finished_at``, ``expires_at``:
                       ISO-8601 UTC text with milliseconds and ``Z``, or ``NULL``
counters               ``estimated_item_count``, ``items_succeeded``, ``items_failed``:
                       integers
``cancel_requested``   0 or 1
``checkpoint``         the scan cursor after the last committed batch, or ``NULL``
``options_key``        the options' key (``deleteByQueryOptions``)
``options``            JSON: the options as the task type writes them
``failures``           JSON: ``[[code, description, data or null], ...]``
``parent``             a slice's task id (docs/slices.md), else ``NULL`` (version 5)
``slice_until``        a slice's last ``_id``, or ``NULL`` (version 5)
``slices``             how many slices the task runs in: 1 unless sliced (version 5)
``split``              JSON (ASCII): a sliced task's split points, or ``NULL`` (version 5)
=====================  ==================================================================

Inside the two JSON columns a date is ``{"$date": "<ISO-8601>"}`` (the form every task
type's parser and the filter language read back as the same date); everything else is
plain JSON. Version 1 stored the public task JSON in one ``body`` column; it is only
read (:func:`decode_v1`), to upgrade a file or to list a file opened read-only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskengine.errors import InvalidTask, StorageError
from taskengine.task import Failure, RawOptions, Task, TaskStatus, format_timestamp, parse_timestamp

__all__ = [
    "COLUMNS",
    "COLUMNS_V1",
    "COLUMNS_V2",
    "UNTIL",
    "Row",
    "decode",
    "decode_v1",
    "encode",
    "encode_failures",
    "encode_json",
]

Row = tuple[
    str,
    str,
    str,
    str,
    str | None,
    str | None,
    str | None,
    int,
    int,
    int,
    int,
    str | None,
    str,
    str,
    str,
    str | None,
    str | None,
    int,
    str | None,
]
"""A row, in :data:`COLUMNS` order."""

COLUMNS_V2 = (
    "id, type, status, created_at, started_at, finished_at, expires_at,"
    " estimated_item_count, items_succeeded, items_failed, cancel_requested, checkpoint,"
    " options_key, options, failures"
)
"""The version-2 columns (before slices): what a read-only view of an older file reads."""

COLUMNS = COLUMNS_V2 + ", parent, slice_until, slices, split"
"""The columns a task is written to and read from, in :data:`Row` order."""

UNTIL = 16
"""The index of ``slice_until`` in a row (an item id, like ``checkpoint``)."""

_SPLIT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)

COLUMNS_V1 = "body, checkpoint"
"""The version-1 columns a task is read from."""

_STATUS = {status.value: status for status in TaskStatus}


def _date(value: object) -> object:
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not a JSON value")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_date)


def encode_json(value: Any) -> str:
    """``value`` in the JSON columns' encoding (dates as ``{"$date": ISO}``)."""
    return _ENCODER.encode(value)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def encode_failures(failures: tuple[Failure, ...]) -> str:
    """The ``failures`` column of these failures."""
    if not failures:
        return "[]"
    return encode_json([[f.code, f.description, f.data] for f in failures])


def encode(task: Task, options: str | None = None, failures: str | None = None) -> Row:
    """The row of ``task``; ``options``/``failures``: their columns when already encoded."""
    return (
        task.id,
        task.type,
        task.status.value,
        format_timestamp(task.created_at),
        _time(task.started_at),
        _time(task.finished_at),
        _time(task.expires_at),
        task.estimated_item_count,
        task.items_succeeded,
        task.items_failed,
        1 if task.cancel_requested else 0,
        task.checkpoint,
        task.options_key,
        encode_json(task.options.to_json()) if options is None else options,
        encode_failures(task.failures) if failures is None else failures,
        task.parent,
        task.until,
        task.slices,
        _SPLIT_ENCODER.encode(list(task.split)) if task.split else None,
    )


def decode(row: tuple[Any, ...]) -> Task:
    """The task of a row (columns as :data:`COLUMNS`, or :data:`COLUMNS_V2`).

    Raises:
        StorageError: the row is not a task this format can hold.
    """
    try:
        options = json.loads(row[13])
        collection = options["dataCollectionId"]
        if type(collection) is not str:
            raise ValueError("options without a dataCollectionId")
        return Task(
            id=row[0],
            type=row[1],
            status=_STATUS[row[2]],
            created_at=parse_timestamp(row[3]),
            started_at=None if row[4] is None else parse_timestamp(row[4]),
            finished_at=None if row[5] is None else parse_timestamp(row[5]),
            expires_at=None if row[6] is None else parse_timestamp(row[6]),
            estimated_item_count=int(row[7]),
            items_succeeded=int(row[8]),
            items_failed=int(row[9]),
            cancel_requested=bool(row[10]),
            checkpoint=row[11],
            options_key=row[12],
            options=RawOptions(collection, options),
            failures=_decode_failures(row[14]),
            **(_slice_fields(row) if len(row) > 15 else {}),
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise StorageError(f"a stored task cannot be read back: {exc!r}") from exc


def _slice_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    split = () if row[18] is None else tuple(json.loads(row[18]))
    if not all(type(point) is str for point in split):
        raise ValueError("split points are not ids")
    return {"parent": row[15], "until": row[16], "slices": int(row[17]), "split": split}


def _decode_failures(text: str) -> tuple[Failure, ...]:
    if text == "[]":
        return ()
    out = []
    for code, description, data in json.loads(text):
        if data is not None and not isinstance(data, Mapping):
            raise ValueError("failure data is not an object")
        out.append(Failure(str(code), str(description), data))
    return tuple(out)


def decode_v1(row: tuple[Any, ...]) -> Task:
    """The task of a version-1 row (columns as :data:`COLUMNS_V1`: the task JSON).

    Raises:
        StorageError: the body is not task JSON.
    """
    body, checkpoint = row
    try:
        return Task.from_json(json.loads(body), checkpoint=checkpoint)
    except (ValueError, InvalidTask) as exc:
        raise StorageError(f"a stored task cannot be read back: {exc}") from exc
