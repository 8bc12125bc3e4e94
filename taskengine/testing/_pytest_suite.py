"""``StorageConformance`` and ``TaskStoreConformance``: the conformance suites as pytest
test classes.

Kept apart from the checks because it imports pytest: ``taskengine.testing`` loads this
module only when one of the classes is first asked for, so :func:`run_conformance` and
:func:`run_taskstore_conformance` work where pytest is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskengine.clock import ManualClock
from taskengine.storage.base import Storage
from taskengine.taskstore import TaskStore
from taskengine.testing._checks import Check, close_storage
from taskengine.testing._suite import CHECKS
from taskengine.testing._taskstore_checks import TaskStoreCheck
from taskengine.testing._taskstore_suite import TASKSTORE_CHECKS

__all__ = ["StorageConformance", "TaskStoreConformance"]


class StorageConformance:
    """Subclass as ``Test...`` in your pytest module; each check becomes a test.

    Provide a fresh, empty storage per test by overriding :meth:`make_storage`, or by
    overriding the ``storage`` fixture (to manage cleanup yourself).
    """

    def make_storage(self) -> Storage:
        """Return a fresh, empty storage (override this, or the ``storage`` fixture)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_storage() or the storage fixture"
        )

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        """A fresh storage from :meth:`make_storage`, closed after the test if it can be."""
        store = self.make_storage()
        try:
            yield store
        finally:
            close_storage(store)

    @pytest.mark.parametrize("check", CHECKS, ids=[check.name for check in CHECKS])
    def test_conformance(self, storage: Storage, check: Check) -> None:
        """The storage keeps the rule the check names (see the check's docstring)."""
        check.run(storage)


class TaskStoreConformance:
    """Subclass as ``Test...`` in your pytest module; each task-store check becomes a test.

    Provide a fresh, empty task store per test by overriding :meth:`make_task_store`, or
    by overriding the ``task_store`` fixture (to manage cleanup yourself).
    """

    def make_task_store(self) -> TaskStore:
        """Return a fresh, empty task store (override this, or the ``task_store`` fixture)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_task_store() or the task_store fixture"
        )

    @pytest.fixture
    def task_store(self) -> Iterator[TaskStore]:
        """A fresh store from :meth:`make_task_store`, closed after the test if it can be."""
        store = self.make_task_store()
        try:
            yield store
        finally:
            close_storage(store)

    @pytest.mark.parametrize("check", TASKSTORE_CHECKS, ids=[c.name for c in TASKSTORE_CHECKS])
    def test_taskstore_conformance(self, task_store: TaskStore, check: TaskStoreCheck) -> None:
        """The task store keeps the ownership rule the check names (its docstring)."""
        check.run(task_store, ManualClock())
