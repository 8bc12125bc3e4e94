"""Both task stores pass the task-store conformance suite (the ownership rules)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskengine.storage.sqlite import SQLiteStorage
from taskengine.taskstore import MemoryTaskStore, SQLiteTaskStore, TaskStore
from taskengine.testing import (
    TASKSTORE_CHECKS,
    ConformanceError,
    TaskStoreConformance,
    run_taskstore_conformance,
)


class TestMemoryTaskStore(TaskStoreConformance):
    """The memory task store keeps every ownership rule."""

    def make_task_store(self) -> TaskStore:
        """A fresh memory store."""
        return MemoryTaskStore()


class TestSQLiteTaskStore(TaskStoreConformance):
    """The SQLite task store, in a file of its own, keeps every ownership rule."""

    @pytest.fixture
    def task_store(self, tmp_path: Path) -> Iterator[TaskStore]:
        """A fresh SQLite store in a temporary file."""
        store = SQLiteTaskStore(tmp_path / "tasks.db")
        yield store
        store.close()


class TestSQLiteTaskStoreOnSharedStorage(TaskStoreConformance):
    """The SQLite task store sharing an item storage's database keeps every rule."""

    @pytest.fixture
    def task_store(self, tmp_path: Path) -> Iterator[TaskStore]:
        """A fresh SQLite store on a SQLiteStorage's database."""
        storage = SQLiteStorage(tmp_path / "all.db")
        yield SQLiteTaskStore(storage)
        storage.close()


def test_run_taskstore_conformance_passes_both_stores(tmp_path: Path) -> None:
    """Without pytest's class, run_taskstore_conformance finds no failure in either store."""
    assert run_taskstore_conformance(MemoryTaskStore) == []
    paths = iter(range(len(TASKSTORE_CHECKS)))
    assert run_taskstore_conformance(lambda: SQLiteTaskStore(tmp_path / f"{next(paths)}.db")) == []


class ForgetfulStore(MemoryTaskStore):
    """A broken store: a claim never looks at the lease already held."""

    def claimable(self, now, limit):  # type: ignore[no-untyped-def]
        """Every unfinished task, leased or not (wrong)."""
        return [task.id for task in self.unfinished()][:limit]


def test_the_suite_reports_a_broken_store() -> None:
    """A store that lists leased tasks as claimable fails, with the rule named."""
    failures = run_taskstore_conformance(ForgetfulStore)
    assert "claimable_order_and_limit" in {failure.name for failure in failures}
    assert all(isinstance(failure.error, ConformanceError) for failure in failures)


class CarelessStore(MemoryTaskStore):
    """A broken store: update ignores its fence, and resign forgets the role's token."""

    def update(self, task_id, change, fence=None, *, now=None):  # type: ignore[no-untyped-def]
        """Update whoever holds the task (wrong)."""
        return super().update(task_id, change)

    def resign(self, lease):  # type: ignore[no-untyped-def]
        """Forget the role altogether, token included (wrong)."""
        held = self._leaders.get(lease.task_id)
        if held is not None and held[:2] == (lease.owner, lease.token):
            del self._leaders[lease.task_id]


def test_the_suite_reports_a_broken_update_and_resign() -> None:
    """A store whose update ignores the fence and whose resign resets the token fails the
    update and leadership checks that say so."""
    failures = {failure.name for failure in run_taskstore_conformance(CarelessStore)}
    assert {"fenced_update_needs_a_current_lease", "resign_frees_the_role_at_once"} <= failures
    assert "claim_grants_a_lease" not in failures
