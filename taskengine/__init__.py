"""taskengine: bulk data operations as background tasks over pluggable storage.

The public API is re-exported here; everything else is private. The modules
``taskengine.http`` (WSGI app), ``taskengine.testing`` (storage conformance suite) and
``taskengine.cli`` (the ``taskengine`` command) are public modules of their own.

Exports are imported on first use (PEP 562), so ``import taskengine.cli`` stays cheap and
the ``taskengine`` command can take charge of Ctrl-C before the engine is even loaded, and
``import taskengine`` never imports psycopg: only the first use of ``PostgresStorage`` or
``PostgresTaskStore`` does (``pip install 'taskengine[postgres]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskengine._pg_taskstore import PostgresTaskStore
    from taskengine.clock import Clock, ManualClock, SystemClock
    from taskengine.engine import TaskEngine, TaskPage
    from taskengine.errors import (
        CollectionExists,
        CollectionNotFound,
        DuplicateItem,
        InvalidEnvironment,
        InvalidFilter,
        InvalidItem,
        InvalidRequest,
        InvalidTask,
        InvalidTransition,
        LeaseLost,
        SandboxNotEnabled,
        StorageError,
        TaskEngineError,
        TaskFailure,
        TaskNotFound,
        Violation,
    )
    from taskengine.filters import Dialect, Filter, compile_filter, matches
    from taskengine.progress import Progress
    from taskengine.storage import (
        CollectionInfo,
        Count,
        Environment,
        MemoryStorage,
        Page,
        SQLiteStorage,
        Storage,
        WriteResult,
    )
    from taskengine.storage.postgres import PostgresStorage
    from taskengine.task import Failure, Task, TaskStatus
    from taskengine.taskstore import Lease, MemoryTaskStore, SQLiteTaskStore, TaskStore
    from taskengine.tasktype import (
        BatchChanges,
        Executor,
        ItemFailure,
        Plan,
        Service,
        TaskOptions,
        TaskType,
    )
    from taskengine.tasktypes._common import TaskEnvironment
    from taskengine.tasktypes._fieldops import Operations, ReplaceItem
    from taskengine.tasktypes.copy_field_data import CopyFieldDataOptions
    from taskengine.tasktypes.delete_by_query import DeleteByQueryOptions
    from taskengine.tasktypes.edit_field_data import EditFieldDataOptions
    from taskengine.tasktypes.update_publish_status import (
        PublishOperation,
        UpdatePublishStatusOptions,
    )

_EXPORTS: dict[str, str] = {
    "BatchChanges": "taskengine.tasktype",
    "Clock": "taskengine.clock",
    "CollectionExists": "taskengine.errors",
    "CollectionInfo": "taskengine.storage",
    "CollectionNotFound": "taskengine.errors",
    "CopyFieldDataOptions": "taskengine.tasktypes.copy_field_data",
    "Count": "taskengine.storage",
    "DeleteByQueryOptions": "taskengine.tasktypes.delete_by_query",
    "Dialect": "taskengine.filters",
    "DuplicateItem": "taskengine.errors",
    "EditFieldDataOptions": "taskengine.tasktypes.edit_field_data",
    "Environment": "taskengine.storage",
    "Executor": "taskengine.tasktype",
    "Failure": "taskengine.task",
    "Filter": "taskengine.filters",
    "InvalidEnvironment": "taskengine.errors",
    "InvalidFilter": "taskengine.errors",
    "InvalidItem": "taskengine.errors",
    "InvalidRequest": "taskengine.errors",
    "InvalidTask": "taskengine.errors",
    "InvalidTransition": "taskengine.errors",
    "ItemFailure": "taskengine.tasktype",
    "Lease": "taskengine.taskstore",
    "LeaseLost": "taskengine.errors",
    "ManualClock": "taskengine.clock",
    "MemoryStorage": "taskengine.storage",
    "MemoryTaskStore": "taskengine.taskstore",
    "Operations": "taskengine.tasktypes._fieldops",
    "Page": "taskengine.storage",
    "Plan": "taskengine.tasktype",
    "PostgresStorage": "taskengine.storage.postgres",
    "PostgresTaskStore": "taskengine._pg_taskstore",
    "Progress": "taskengine.progress",
    "PublishOperation": "taskengine.tasktypes.update_publish_status",
    "ReplaceItem": "taskengine.tasktypes._fieldops",
    "SQLiteStorage": "taskengine.storage",
    "SQLiteTaskStore": "taskengine.taskstore",
    "SandboxNotEnabled": "taskengine.errors",
    "Service": "taskengine.tasktype",
    "Storage": "taskengine.storage",
    "StorageError": "taskengine.errors",
    "SystemClock": "taskengine.clock",
    "Task": "taskengine.task",
    "TaskEngine": "taskengine.engine",
    "TaskEngineError": "taskengine.errors",
    "TaskEnvironment": "taskengine.tasktypes._common",
    "TaskFailure": "taskengine.errors",
    "TaskNotFound": "taskengine.errors",
    "TaskOptions": "taskengine.tasktype",
    "TaskPage": "taskengine.engine",
    "TaskStatus": "taskengine.task",
    "TaskStore": "taskengine.taskstore",
    "TaskType": "taskengine.tasktype",
    "UpdatePublishStatusOptions": "taskengine.tasktypes.update_publish_status",
    "Violation": "taskengine.errors",
    "WriteResult": "taskengine.storage",
    "compile_filter": "taskengine.filters",
    "matches": "taskengine.filters",
}
"""Where each export lives: name -> module."""

__version__ = "0.1.0"

__all__ = [
    "BatchChanges",
    "Clock",
    "CollectionExists",
    "CollectionInfo",
    "CollectionNotFound",
    "CopyFieldDataOptions",
    "Count",
    "DeleteByQueryOptions",
    "Dialect",
    "DuplicateItem",
    "EditFieldDataOptions",
    "Environment",
    "Executor",
    "Failure",
    "Filter",
    "InvalidEnvironment",
    "InvalidFilter",
    "InvalidItem",
    "InvalidRequest",
    "InvalidTask",
    "InvalidTransition",
    "ItemFailure",
    "Lease",
    "LeaseLost",
    "ManualClock",
    "MemoryStorage",
    "MemoryTaskStore",
    "Operations",
    "Page",
    "Plan",
    "PostgresStorage",
    "PostgresTaskStore",
    "Progress",
    "PublishOperation",
    "ReplaceItem",
    "SQLiteStorage",
    "SQLiteTaskStore",
    "SandboxNotEnabled",
    "Service",
    "Storage",
    "StorageError",
    "SystemClock",
    "Task",
    "TaskEngine",
    "TaskEngineError",
    "TaskEnvironment",
    "TaskFailure",
    "TaskNotFound",
    "TaskOptions",
    "TaskPage",
    "TaskStatus",
    "TaskStore",
    "TaskType",
    "UpdatePublishStatusOptions",
    "Violation",
    "WriteResult",
    "__version__",
    "compile_filter",
    "matches",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
