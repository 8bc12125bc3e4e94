"""TaskEngine: lifecycle, batches, cancellation, failures, retention, progress, threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import (
    CollectionNotFound,
    InvalidRequest,
    InvalidTask,
    StorageError,
    TaskFailure,
    TaskNotFound,
    Violation,
)
from taskengine.filters import compile_filter
from taskengine.storage import Environment, MemoryStorage, Page, WriteResult
from taskengine.storage.base import Storage
from taskengine.task import MAX_FAILURES, RawOptions, Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore
from taskengine.tasktype import BatchChanges, ItemFailure, Plan, TaskOptions, TaskType

WAIT = 10.0  # bounded waits, real seconds


@attrs.frozen
class CountOptions:
    """Options of the test type: bump ``field`` on every matching item."""

    collection: str
    field: str = "n"
    filter: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """camelCase options JSON."""
        out: dict[str, Any] = {"dataCollectionId": self.collection, "field": self.field}
        if self.filter is not None:
            out["filter"] = dict(self.filter)
        return out


def parse_count(value: Any, path: str) -> tuple[TaskOptions | None, list[Violation]]:
    """Parse the test type's options, reporting every violation."""
    if not isinstance(value, Mapping):
        return None, [Violation(path, "must be an object")]
    problems = []
    collection = value.get("dataCollectionId")
    if not isinstance(collection, str) or not collection:
        problems.append(Violation(f"{path}.dataCollectionId", "required"))
    field = value.get("field", "n")
    if not isinstance(field, str) or not field:
        problems.append(Violation(f"{path}.field", "must be a non-empty string"))
    for key in value:
        if key not in ("dataCollectionId", "field", "filter"):
            problems.append(Violation(f"{path}.{key}", "unknown field"))
    flt = value.get("filter")
    if problems or not isinstance(collection, str):
        return None, problems
    return CountOptions(collection, field, flt), []


class CountExecutor:
    """Bumps a counter per item; items with ``bad`` fail; hooks for tests."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.batches = 0
        self.boom_at: int | None = None
        self.plan_failure: TaskFailure | None = None
        self.ghosts: list[str] = []
        self.committed_batches: list[WriteResult] = []

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Check the collection, compile the filter."""
        if self.plan_failure is not None:
            raise self.plan_failure
        assert isinstance(options, CountOptions)
        storage.collection_info(options.collection)
        flt = compile_filter(options.filter, "wix") if options.filter else None
        return Plan(options.collection, Environment.LIVE, flt, state=options.field)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Bump ``plan.state`` on good items; fail bad ones."""
        self.batches += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.boom_at is not None and self.batches >= self.boom_at:
            raise ZeroDivisionError("executor bug")
        field = plan.state
        replaces: list[dict[str, Any]] = []
        failures: list[ItemFailure] = []
        for item in items:
            if item.get("bad"):
                failures.append(ItemFailure(item["_id"], "WDE0075", "bad item"))
            else:
                item[field] = item.get(field, 0) + 1
                replaces.append(item)
        replaces.extend({"_id": ghost} for ghost in self.ghosts)
        self.ghosts = []
        return BatchChanges(replaces=replaces, failures=failures)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Remember what was written."""
        self.committed_batches.append(written)


def count_type(executor: CountExecutor | None = None) -> TaskType:
    """The test task type."""
    return TaskType("COUNT_ITEMS", "countItemsOptions", parse_count, executor or CountExecutor())


def spec(collection: str = "things", **extra: Any) -> dict[str, Any]:
    """A task JSON for the test type."""
    return {"type": "COUNT_ITEMS", "countItemsOptions": {"dataCollectionId": collection, **extra}}


def make_storage(n: int, bad: Sequence[int] = ()) -> MemoryStorage:
    """A memory storage with ``n`` items in collection ``things``."""
    storage = MemoryStorage()
    storage.create_collection("things")
    bad_set = set(bad)
    storage.insert_items(
        "things", "LIVE", [{"_id": f"i{k:05d}", "k": k, "bad": k in bad_set} for k in range(n)]
    )
    return storage


@pytest.fixture
def executor() -> CountExecutor:
    """A fresh test executor."""
    return CountExecutor()


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock."""
    return ManualClock()


def engine_for(
    storage: Storage, executor: CountExecutor, clock: ManualClock | None = None, **kw: Any
) -> TaskEngine:
    """An engine with only the test type."""
    return TaskEngine(storage, task_types=[count_type(executor)], clock=clock, **kw)


def counters(storage: Storage) -> list[int]:
    """The ``n`` of every item, in ``_id`` order."""
    return [item.get("n", 0) for item in storage.find("things", "LIVE")]


# -- create / get / list ---------------------------------------------------------------


def test_create_returns_new_task_with_reference_json(
    executor: CountExecutor, clock: ManualClock
) -> None:
    """A created task is NEW, has an id, counters, empty failures and no start/finish time."""
    engine = engine_for(make_storage(3), executor, clock)
    task = engine.create_task(spec())
    data = task.to_json()
    assert data["status"] == "NEW"
    assert data["type"] == "COUNT_ITEMS"
    assert data["id"] == task.id
    assert "startedAt" not in data
    assert "finishedAt" not in data
    assert "expiresAt" not in data
    assert data["itemsSucceeded"] == data["itemsFailed"] == data["estimatedItemCount"] == 0
    assert data["failures"] == []
    assert data["countItemsOptions"] == {"dataCollectionId": "things", "field": "n"}
    assert engine.get_task(task.id) == task


def test_run_until_idle_completes_with_exact_counters(
    executor: CountExecutor, clock: ManualClock
) -> None:
    """A task processes every item once, in batches, and ends COMPLETED with exact counters."""
    storage = make_storage(23)
    engine = engine_for(storage, executor, clock, batch_size=5)
    task = engine.create_task(spec())
    assert engine.run_until_idle() == 1
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed, done.estimated_item_count) == (23, 0, 23)
    assert done.started_at == clock.now()
    assert done.finished_at == clock.now()
    assert done.expires_at == clock.now() + timedelta(days=30)
    assert counters(storage) == [1] * 23
    assert executor.batches == 5


def test_create_accepts_wrapped_and_typed_specs(executor: CountExecutor) -> None:
    """``{"task": {...}}`` and typed options objects create the same kind of task."""
    engine = engine_for(make_storage(1), executor)
    wrapped = engine.create_task({"task": spec(field="m")})
    typed = engine.create_task(CountOptions("things", "m"))
    assert wrapped.options == typed.options == CountOptions("things", "m")
    assert typed.type == "COUNT_ITEMS"


def test_create_reports_every_violation_and_stores_nothing(executor: CountExecutor) -> None:
    """A bad spec raises InvalidTask listing each violation by ``task.`` path."""
    engine = engine_for(make_storage(1), executor)
    bad = {
        "type": "COUNT_ITEMS",
        "countItemsOptions": {"field": 3, "extra": 1},
        "status": "RUNNING",
        "deleteByQueryOptions": {},
        "bogus": 1,
    }
    with pytest.raises(InvalidTask) as info:
        engine.create_task(bad)
    fields = {v.field for v in info.value.violations}
    assert fields == {
        "task.countItemsOptions.dataCollectionId",
        "task.countItemsOptions.field",
        "task.countItemsOptions.extra",
        "task.status",
        "task.deleteByQueryOptions",
        "task.bogus",
    }
    assert engine.list_tasks().total == 0


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({}, "task.type"),
        ({"type": "NOPE"}, "task.type"),
        ({"type": "COUNT_ITEMS"}, "task.countItemsOptions"),
        ({"type": "COUNT_ITEMS", "countItemsOptions": []}, "task.countItemsOptions"),
        ([1], "task"),
        ({"task": 3}, "task"),
    ],
)
def test_create_rejects_bad_shapes(executor: CountExecutor, bad: Any, field: str) -> None:
    """Missing or unknown types and missing options are violations at their path."""
    engine = engine_for(make_storage(1), executor)
    with pytest.raises(InvalidTask) as info:
        engine.create_task(bad)
    assert field in {v.field for v in info.value.violations}


def test_unknown_id_is_not_found(executor: CountExecutor) -> None:
    """get, cancel, progress and wait on an unknown id raise TaskNotFound."""
    engine = engine_for(make_storage(1), executor)
    for call in (engine.get_task, engine.cancel_task, engine.get_progress, engine.wait):
        with pytest.raises(TaskNotFound):
            call("nope")
    with pytest.raises(TaskNotFound):
        engine.get_task(12)  # type: ignore[arg-type]


def test_list_is_newest_first_with_total(executor: CountExecutor) -> None:
    """list_tasks pages newest first and reports the total."""
    engine = engine_for(make_storage(1), executor)
    ids = [engine.create_task(spec()).id for _ in range(7)]
    page = engine.list_tasks(limit=3, offset=2)
    assert [t.id for t in page.tasks] == ids[::-1][2:5]
    assert page.total == 7
    data = page.to_json()
    assert data["metadata"] == {"count": 3, "offset": 2, "total": 7}
    assert engine.list_tasks(limit=100, offset=7).tasks == ()


@pytest.mark.parametrize(
    ("limit", "offset", "field"),
    [
        (0, 0, "paging.limit"),
        (101, 0, "paging.limit"),
        ("5", 0, "paging.limit"),
        (True, 0, "paging.limit"),
        (5, -1, "paging.offset"),
    ],
)
def test_list_rejects_bad_paging(
    executor: CountExecutor, limit: Any, offset: Any, field: str
) -> None:
    """limit outside 1..100 or a negative offset is an InvalidRequest naming the field."""
    engine = engine_for(make_storage(1), executor)
    with pytest.raises(InvalidRequest) as info:
        engine.list_tasks(limit=limit, offset=offset)
    assert [v.field for v in info.value.violations] == [field]


def test_bad_settings_are_rejected() -> None:
    """Out-of-range constructor settings raise InvalidRequest naming the argument."""
    with pytest.raises(InvalidRequest) as info:
        TaskEngine(MemoryStorage(), task_types=[], workers=0, batch_size=0, retention=timedelta(-1))
    assert {v.field for v in info.value.violations} == {"workers", "batch_size", "retention"}
    with pytest.raises(InvalidRequest) as info:
        TaskEngine(MemoryStorage(), task_types=[], set_batch_size=0)
    assert [v.field for v in info.value.violations] == ["set_batch_size"]
    for seconds in (0, -1.0, 3601, True, "0.1"):
        with pytest.raises(InvalidRequest) as info:
            TaskEngine(MemoryStorage(), task_types=[], set_batch_seconds=seconds)  # type: ignore[arg-type]
        assert [v.field for v in info.value.violations] == ["set_batch_seconds"]


def test_duplicate_task_type_is_rejected(executor: CountExecutor) -> None:
    """Registering a type name twice raises InvalidRequest."""
    engine = engine_for(make_storage(1), executor)
    with pytest.raises(InvalidRequest):
        engine.register_task_type(count_type())


# -- cancellation ------------------------------------------------------------------------


def test_cancel_new_is_immediate(executor: CountExecutor, clock: ManualClock) -> None:
    """Cancelling a NEW task ends it FAILED with one CANCELLED failure without data."""
    storage = make_storage(4)
    engine = engine_for(storage, executor, clock)
    task = engine.create_task(spec())
    cancelled = engine.cancel_task(task.id)
    assert cancelled.status is TaskStatus.FAILED
    data = cancelled.to_json()
    assert data["failures"] == [
        {"code": "CANCELLED", "description": data["failures"][0]["description"]}
    ]
    assert "finishedAt" in data
    assert "startedAt" not in data
    assert engine.run_until_idle() == 1
    assert counters(storage) == [0] * 4
    assert engine.cancel_task(task.id) == cancelled


def test_cancel_running_takes_effect_after_current_batch(executor: CountExecutor) -> None:
    """A RUNNING task shows cancelRequested at once, then ends CANCELLED with counters kept."""
    storage = make_storage(20)
    executor.gate = threading.Event()
    with engine_for(storage, executor, batch_size=5) as engine:
        task = engine.create_task(spec())
        assert executor.entered.wait(WAIT)
        requested = engine.cancel_task(task.id)
        assert requested.status is TaskStatus.RUNNING
        assert requested.cancel_requested
        assert requested.to_json()["cancelRequested"] is True
        assert engine.get_progress(task.id).message == "Cancelling"
        executor.gate.set()
        final = engine.wait(task.id, WAIT)
    assert final.status is TaskStatus.FAILED
    assert final.failures[0].code == "CANCELLED"
    assert final.failures[0].data is None
    assert final.items_succeeded == 5
    assert executor.batches == 1
    assert counters(storage) == [1] * 5 + [0] * 15
    assert not final.cancel_requested
    assert "cancelRequested" not in final.to_json()  # shown only until the task ends


# -- failures ------------------------------------------------------------------------------


def test_item_failures_are_capped_but_counted(executor: CountExecutor) -> None:
    """Over 100 item failures: the list keeps 100, itemsFailed counts all; COMPLETED."""
    storage = make_storage(250, bad=range(0, 250, 2))
    engine = engine_for(storage, executor, batch_size=40)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed) == (125, 125)
    assert len(done.failures) == MAX_FAILURES
    assert done.failures[0].to_json() == {
        "code": "WDE0075",
        "description": "bad item",
        "data": {"itemId": "i00000"},
    }


def test_vanished_items_are_item_failures(executor: CountExecutor) -> None:
    """A replace of an id that is no longer stored counts as a WDE0073 item failure."""
    engine = engine_for(make_storage(3), executor)
    executor.ghosts = ["ghost"]
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert (done.items_succeeded, done.items_failed) == (3, 1)
    assert done.failures[0].code == "WDE0073"
    assert done.failures[0].data == {"itemId": "ghost"}


def test_plan_failure_fails_task_with_its_code(executor: CountExecutor) -> None:
    """A TaskFailure from plan ends the task FAILED with that code and data."""
    engine = engine_for(make_storage(3), executor)
    executor.plan_failure = TaskFailure("WDE0119", "no plugin", {"collection": "things"})
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.started_at is not None
    assert done.failures[0].to_json() == {
        "code": "WDE0119",
        "description": "no plugin",
        "data": {"collection": "things"},
    }


def test_missing_collection_fails_with_wde0025(executor: CountExecutor) -> None:
    """A task on a collection that does not exist ends FAILED with WDE0025."""
    engine = engine_for(make_storage(3), executor)
    task = engine.create_task(spec("absent"))
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0025"


class FlakyStorage(MemoryStorage):
    """A memory storage whose scans fail with StorageError on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.failures_left = 0
        self.fail_forever_after: int | None = None
        self.scans = 0

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = 1000,
        filter: Any = None,
    ) -> Page:
        """Fail while ``failures_left`` > 0 or after ``fail_forever_after`` scans."""
        self.scans += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise StorageError("disk on fire")
        if self.fail_forever_after is not None and self.scans > self.fail_forever_after:
            raise StorageError("disk gone")
        return super().scan(collection, environment, after=after, limit=limit, filter=filter)


def flaky(n: int) -> FlakyStorage:
    """A flaky storage with ``n`` items."""
    storage = FlakyStorage()
    storage.create_collection("things")
    storage.insert_items("things", "LIVE", [{"_id": f"i{k:05d}"} for k in range(n)])
    return storage


def test_storage_errors_are_retried(executor: CountExecutor) -> None:
    """A StorageError within the retry budget is retried; counters stay exact."""
    storage = flaky(10)
    storage.failures_left = 2
    engine = engine_for(storage, executor, batch_size=3, max_retries=2, retry_delay=0)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert done.items_succeeded == 10
    assert counters(storage) == [1] * 10


def test_storage_down_fails_with_wde0054_counters_intact(executor: CountExecutor) -> None:
    """Past the retry budget the task ends FAILED/WDE0054 with committed counters."""
    storage = flaky(10)
    storage.fail_forever_after = 2
    engine = engine_for(storage, executor, batch_size=3, max_retries=2, retry_delay=0)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0054"
    storage.fail_forever_after = None
    assert done.items_succeeded == 6
    assert counters(storage) == [1] * 6 + [0] * 4


def test_unexpected_error_is_raised_by_run_until_idle(executor: CountExecutor) -> None:
    """A bug in an executor fails the task (WDE0054) and run_until_idle re-raises it."""
    storage = make_storage(10)
    executor.boom_at = 2
    engine = engine_for(storage, executor, batch_size=4)
    task = engine.create_task(spec())
    with pytest.raises(ZeroDivisionError):
        engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0054"
    assert done.items_succeeded == 4


def test_unexpected_error_in_worker_fails_task_without_killing_worker(
    executor: CountExecutor,
) -> None:
    """With worker threads an executor bug fails the task and the next task still runs."""
    storage = make_storage(6)
    executor.boom_at = 1
    with engine_for(storage, executor) as engine:
        first = engine.create_task(spec())
        assert engine.wait(first.id, WAIT).status is TaskStatus.FAILED
        executor.boom_at = None
        second = engine.create_task(spec())
        assert engine.wait(second.id, WAIT).status is TaskStatus.COMPLETED


# -- retention ---------------------------------------------------------------------------


def test_finished_tasks_expire_on_read_and_by_sweep(
    executor: CountExecutor, clock: ManualClock
) -> None:
    """After expiresAt a task is not found and the task store no longer holds it."""
    store = MemoryTaskStore()
    engine = engine_for(
        make_storage(2), executor, clock, task_store=store, retention=timedelta(hours=1)
    )
    first = engine.create_task(spec())
    second = engine.create_task(spec())
    engine.run_until_idle()
    assert engine.get_task(first.id).expires_at == clock.now() + timedelta(hours=1)
    clock.advance(timedelta(minutes=59))
    assert engine.list_tasks().total == 2
    clock.advance(timedelta(minutes=1))
    with pytest.raises(TaskNotFound):
        engine.get_task(first.id)
    assert len(store) == 1
    assert engine.sweep() == 1
    assert len(store) == 0
    with pytest.raises(TaskNotFound):
        engine.cancel_task(second.id)
    assert engine.list_tasks().total == 0


def test_unfinished_tasks_never_expire(executor: CountExecutor, clock: ManualClock) -> None:
    """A NEW task has no expiresAt and survives any amount of time."""
    engine = engine_for(make_storage(2), executor, clock, retention=timedelta(0))
    task = engine.create_task(spec())
    clock.advance(timedelta(days=365))
    engine.sweep()
    assert engine.get_task(task.id).expires_at is None


# -- progress ------------------------------------------------------------------------------


def test_progress_view_follows_the_task(executor: CountExecutor, clock: ManualClock) -> None:
    """get_progress gives the seed-002 fields for NEW and COMPLETED tasks."""
    engine = engine_for(make_storage(4), executor, clock)
    task = engine.create_task(spec())
    new = engine.get_progress(task.id).to_json("http://h:1/")
    assert new == {
        "Id": task.id,
        "Complete": False,
        "TotalElements": 0,
        "ProcessedElements": 0,
        "ProgressInPercent": 0.0,
        "Message": "Waiting to start",
        "Self": f"http://h:1/api/backgroundtask/{task.id}",
    }
    engine.run_until_idle()
    done = engine.get_progress(task.id).to_json("http://h")
    assert done["Complete"] is True
    assert done["ProgressInPercent"] == 1.0
    assert done["TotalElements"] == done["ProcessedElements"] == 4
    assert done["Message"] == "Task Completed"
    assert done["StartedAt"] == done["FinishedAt"] == "2026-01-01T00:00:00.000Z"


def test_progress_of_cancelled_task_gives_reason(executor: CountExecutor) -> None:
    """A cancelled task's progress message is the cancel reason."""
    engine = engine_for(make_storage(4), executor)
    task = engine.create_task(spec())
    engine.cancel_task(task.id)
    progress = engine.get_progress(task.id)
    assert progress.complete
    assert progress.message == engine.get_task(task.id).failures[0].description


# -- threads, wait, resumption -----------------------------------------------------------


def test_wait_times_out_on_an_unstarted_engine(executor: CountExecutor) -> None:
    """wait returns the unfinished task when the timeout runs out."""
    engine = engine_for(make_storage(1), executor)
    task = engine.create_task(spec())
    assert engine.wait(task.id, 0.01).status is TaskStatus.NEW


def test_run_until_idle_refuses_while_started(executor: CountExecutor) -> None:
    """run_until_idle raises InvalidRequest while worker threads run."""
    with engine_for(make_storage(1), executor) as engine, pytest.raises(InvalidRequest):
        engine.run_until_idle()


def test_stop_mid_task_and_restart_resumes_from_checkpoint(executor: CountExecutor) -> None:
    """Stopping leaves the task RUNNING at its checkpoint; start resumes it exactly once."""
    storage = make_storage(30)
    executor.gate = threading.Event()
    engine = engine_for(storage, executor, batch_size=10)
    engine.start()
    task = engine.create_task(spec())
    assert executor.entered.wait(WAIT)
    stopper = threading.Thread(target=engine.stop)
    stopper.start()
    executor.gate.set()
    stopper.join(WAIT)
    paused = engine.get_task(task.id)
    assert paused.status is TaskStatus.RUNNING
    assert paused.items_succeeded == 10
    assert paused.checkpoint == "i00009"
    with engine:
        final = engine.wait(task.id, WAIT)
    assert final.status is TaskStatus.COMPLETED
    assert final.items_succeeded == 30
    assert counters(storage) == [1] * 30


def test_many_callers_while_workers_run(executor: CountExecutor) -> None:
    """Concurrent create/get/list/cancel/progress callers never break counters or errors."""
    storage = make_storage(60)
    errors: list[BaseException] = []
    with engine_for(storage, executor, workers=3, batch_size=7) as engine:
        ids = [engine.create_task(spec()).id for _ in range(12)]
        barrier = threading.Barrier(6)

        def caller(k: int) -> None:
            try:
                barrier.wait(WAIT)
                for round_ in range(40):
                    task_id = ids[(k * 7 + round_) % len(ids)]
                    engine.get_task(task_id)
                    engine.get_progress(task_id).to_json("http://x")
                    engine.list_tasks(limit=5, offset=round_ % 10)
                    if round_ % 13 == k:
                        engine.cancel_task(task_id)
                    if round_ == 20:
                        ids.append(engine.create_task(spec()).id)
            except BaseException as exc:  # collected, re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 3)
        finals = [engine.wait(task_id, WAIT) for task_id in ids]
    assert errors == []
    assert all(task.is_finished for task in finals)
    for task in finals:
        if task.status is TaskStatus.COMPLETED:
            assert task.items_succeeded == 60
        else:
            assert task.failures[0].code == "CANCELLED"
            assert task.items_succeeded <= 60
    assert sum(counters(storage)) == sum(task.items_succeeded for task in finals)
    assert engine.list_tasks(limit=100).total == len(ids)


class RecordingService:
    """A service that records its calls."""

    def __init__(self) -> None:
        self.storage: Storage | None = None
        self.ticks: list[Any] = []

    def start(self, storage: Storage) -> None:
        """Remember the storage."""
        self.storage = storage

    def tick(self, now: Any) -> Any:
        """Record the time."""
        self.ticks.append(now)
        return None


def test_services_are_started_and_ticked(executor: CountExecutor, clock: ManualClock) -> None:
    """A registered service is started once with the engine's storage and ticked with its clock."""
    engine = engine_for(make_storage(1), executor, clock)
    service = RecordingService()
    engine.register_service(service)
    engine.run_until_idle()
    assert service.storage is engine.storage
    assert service.ticks == [clock.now()]


# -- laws ------------------------------------------------------------------------------------


@given(
    n=st.integers(0, 60),
    batch=st.integers(1, 25),
    bad=st.sets(st.integers(0, 59)),
)
def test_every_item_processed_exactly_once(n: int, batch: int, bad: set[int]) -> None:
    """For any size, batch size and failing subset: each good item bumped once, counters sum."""
    bad_items = [k for k in bad if k < n]
    storage = make_storage(n, bad=bad_items)
    executor = CountExecutor()
    engine = engine_for(storage, executor, batch_size=batch)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert done.items_failed == len(bad_items)
    assert done.items_succeeded == n - len(bad_items)
    assert done.estimated_item_count == n
    assert counters(storage) == [0 if k in bad else 1 for k in range(n)]


@given(st.integers(0, 40), st.integers(1, 10))
def test_filter_limits_items(n: int, batch: int) -> None:
    """Only items the task's wix filter accepts are processed and estimated."""
    storage = make_storage(n)
    engine = engine_for(storage, CountExecutor(), batch_size=batch)
    task = engine.create_task(spec(filter={"k": {"$lt": 10}}))
    engine.run_until_idle()
    done = engine.get_task(task.id)
    expected = min(n, 10)
    assert done.items_succeeded == done.estimated_item_count == expected
    assert counters(storage) == [1 if k < 10 else 0 for k in range(n)]


def _ids(tasks: Iterator[Any]) -> list[str]:
    return [t.id for t in tasks]


def test_collection_dropped_mid_task_fails_wde0025(executor: CountExecutor) -> None:
    """Dropping the collection between batches ends the task FAILED/WDE0025."""
    storage = make_storage(10)
    original = executor.committed

    def dropping(plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        original(plan, changes, written)
        if executor.batches == 1:
            storage.drop_collection("things")

    executor.committed = dropping  # type: ignore[method-assign]
    engine = engine_for(storage, executor, batch_size=4)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0025"
    with pytest.raises(CollectionNotFound):
        storage.collection_info("things")


def test_housekeeper_sweeps_expired_tasks_while_started(executor: CountExecutor) -> None:
    """A started engine's periodic sweep empties the task store of expired tasks."""
    store = MemoryTaskStore()
    clock = ManualClock()
    swept = threading.Event()
    with engine_for(
        make_storage(3),
        executor,
        clock,
        task_store=store,
        retention=timedelta(seconds=5),
        tick_interval=0.005,
    ) as engine:
        task = engine.create_task(spec())
        assert engine.wait(task.id, WAIT).is_finished
        assert len(store) == 1
        clock.advance(6)
        for _ in range(2000):  # bounded: at most WAIT seconds
            if len(store) == 0:
                swept.set()
                break
            swept.wait(0.005)
    assert swept.is_set()


# -- task types from the plug-in, stored options -------------------------------------------


PLUGIN_SERVICES: list[RecordingService] = []


@attrs.frozen
class PluginTypes:
    """What a task-type plug-in returns: its types and the services they need."""

    task_types: list[TaskType]
    services: list[RecordingService]


def plugin_types() -> PluginTypes:
    """A stand-in for the built-in types plug-in: the test type and a new service."""
    PLUGIN_SERVICES.append(RecordingService())
    return PluginTypes([count_type()], [PLUGIN_SERVICES[-1]])


class PluginEngine(TaskEngine):
    """An engine whose built-in types come from :func:`plugin_types`."""

    DEFAULT_TASK_TYPES = f"{__name__}:plugin_types"


def test_engine_without_task_types_registers_what_the_named_plug_in_returns(
    clock: ManualClock,
) -> None:
    """``task_types=None`` registers the types and starts the services the plug-in returns."""
    PLUGIN_SERVICES.clear()
    engine = PluginEngine(make_storage(2), clock=clock)
    assert list(engine.task_types) == ["COUNT_ITEMS"]
    engine.run_until_idle()
    (service,) = PLUGIN_SERVICES
    assert service.storage is engine.storage
    assert service.ticks == [clock.now()]


def test_explicit_task_types_never_resolve_the_plug_in(clock: ManualClock) -> None:
    """Given ``task_types``, the engine registers exactly those and never imports the plug-in."""

    class Unresolvable(TaskEngine):
        DEFAULT_TASK_TYPES = "no_such_module_anywhere:types"

    engine = Unresolvable(make_storage(1), clock=clock, task_types=[count_type()])
    assert list(engine.task_types) == ["COUNT_ITEMS"]


def test_default_engine_has_the_four_built_in_task_types() -> None:
    """The default plug-in gives the four built-in task types."""
    assert sorted(TaskEngine(MemoryStorage()).task_types) == [
        "COPY_FIELD_DATA",
        "DELETE_BY_QUERY",
        "EDIT_FIELD_DATA",
        "UPDATE_PUBLISH_STATUS",
    ]


def stored_task(options: Mapping[str, Any], clock: ManualClock) -> Task:
    """A NEW task of the test type as a task store hands it back: options still JSON."""
    return Task(
        id="stored",
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions(str(options["dataCollectionId"]), dict(options)),
        created_at=clock.now(),
    )


def test_stored_options_that_no_longer_parse_fail_the_task_with_wde0075(
    clock: ManualClock,
) -> None:
    """Stored options the parser now refuses fail the task with WDE0075 naming the collection."""
    store = MemoryTaskStore()
    store.insert(stored_task({"dataCollectionId": "things", "bogus": 1}, clock))
    engine = TaskEngine(make_storage(2), task_store=store, clock=clock, task_types=[count_type()])
    engine.run_until_idle()
    done = engine.get_task("stored")
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0075"
    assert done.failures[0].data == {"dataCollectionId": "things"}
    assert "task.countItemsOptions.bogus" in done.failures[0].description


def test_stored_options_are_parsed_once_per_run(clock: ManualClock) -> None:
    """The engine parses a stored task's raw options once, before the executor plans."""
    calls: list[str] = []

    def counting(value: Any, path: str) -> tuple[TaskOptions | None, list[Violation]]:
        calls.append(path)
        return parse_count(value, path)

    task_type = TaskType("COUNT_ITEMS", "countItemsOptions", counting, CountExecutor())
    store = MemoryTaskStore()
    store.insert(stored_task({"dataCollectionId": "things"}, clock))
    engine = TaskEngine(make_storage(3), task_store=store, clock=clock, task_types=[task_type])
    engine.run_until_idle()
    assert engine.get_task("stored").status is TaskStatus.COMPLETED
    assert calls == ["task.countItemsOptions"]
