"""taskengine: bulk data operations as background tasks over pluggable storage.

The public API is re-exported here; everything else is private. The modules
``taskengine.http`` (WSGI app), ``taskengine.testing`` (storage conformance suite) and
``taskengine.cli`` (the ``taskengine`` command) are public modules of their own.
"""

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
    SandboxNotEnabled,
    StorageError,
    TaskEngineError,
    TaskFailure,
    TaskNotFound,
    Violation,
)
from taskengine.filters import Dialect, Filter, compile_filter, matches
from taskengine.options import (
    CopyFieldDataOptions,
    DeleteByQueryOptions,
    EditFieldDataOptions,
    Operations,
    PublishOperation,
    ReplaceItem,
    TaskEnvironment,
    UpdatePublishStatusOptions,
)
from taskengine.progress import Progress
from taskengine.registry import (
    BatchChanges,
    Executor,
    ItemFailure,
    Plan,
    Service,
    TaskOptions,
    TaskType,
)
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
from taskengine.task import Failure, Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore, SQLiteTaskStore, TaskStore

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
    "ManualClock",
    "MemoryStorage",
    "MemoryTaskStore",
    "Operations",
    "Page",
    "Plan",
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
