"""The task model: transitions, snapshots, JSON out and in, timestamps, clocks."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.clock import ManualClock, SystemClock, utc_ms
from taskengine.errors import InvalidTask, InvalidTransition, Violation
from taskengine.task import (
    MAX_FAILURES,
    TRANSITIONS,
    Failure,
    RawOptions,
    Task,
    TaskStatus,
    check_transition,
    format_timestamp,
    parse_timestamp,
)
from taskengine.tasktype import TaskOptions, TaskType

T0 = datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
RETENTION = timedelta(days=30)


def new_task(task_id: str = "t1") -> Task:
    """A NEW task with raw options."""
    return Task(
        id=task_id,
        type="DELETE_BY_QUERY",
        options_key="deleteByQueryOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0,
    )


ALLOWED = {
    (TaskStatus.NEW, TaskStatus.RUNNING),
    (TaskStatus.NEW, TaskStatus.FAILED),
    (TaskStatus.RUNNING, TaskStatus.COMPLETED),
    (TaskStatus.RUNNING, TaskStatus.FAILED),
}


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(TaskStatus, repeat=2)))
def test_every_pair_of_states(current: TaskStatus, requested: TaskStatus) -> None:
    """Exactly the four lifecycle moves are allowed; the rest raise naming task and states."""
    assert (requested in TRANSITIONS[current]) == ((current, requested) in ALLOWED)
    if (current, requested) in ALLOWED:
        check_transition("t9", current, requested)
        return
    with pytest.raises(InvalidTransition) as info:
        check_transition("t9", current, requested)
    message = str(info.value)
    assert "t9" in message
    assert current.value in message
    assert requested.value in message
    assert info.value.current is current
    assert info.value.requested is requested


def test_snapshot_methods_check_the_lifecycle() -> None:
    """started/with_batch/finished/cancel_was_requested refuse illegal moves."""
    task = new_task()
    with pytest.raises(InvalidTransition):
        task.with_batch(1, 0, [], "a")
    with pytest.raises(InvalidTransition):
        task.cancel_was_requested()
    with pytest.raises(InvalidTransition):
        task.finished(TaskStatus.COMPLETED, T0, RETENTION)
    running = task.started(T0, 5)
    with pytest.raises(InvalidTransition):
        running.started(T0, 5)
    done = running.finished(TaskStatus.COMPLETED, T0, RETENTION)
    with pytest.raises(InvalidTransition):
        done.finished(TaskStatus.FAILED, T0, RETENTION, Failure.cancelled())
    with pytest.raises(ValueError, match="FAILED exactly"):
        running.finished(TaskStatus.FAILED, T0, RETENTION)
    with pytest.raises(ValueError, match="FAILED exactly"):
        running.finished(TaskStatus.COMPLETED, T0, RETENTION, Failure.cancelled())
    with pytest.raises(ValueError, match="negative"):
        running.with_batch(-1, 0, [], None)


def test_json_of_each_state() -> None:
    """to_json shows timestamps only once set, counters and failures always."""
    task = new_task()
    assert task.to_json() == {
        "id": "t1",
        "type": "DELETE_BY_QUERY",
        "status": "NEW",
        "createdAt": "2026-01-01T10:00:00.123Z",
        "estimatedItemCount": 0,
        "itemsSucceeded": 0,
        "itemsFailed": 0,
        "failures": [],
        "deleteByQueryOptions": {"dataCollectionId": "things"},
    }
    running = task.started(T0, 9).cancel_was_requested()
    data = running.to_json()
    assert data["startedAt"] == "2026-01-01T10:00:00.123Z"
    assert data["cancelRequested"] is True
    assert "finishedAt" not in data
    assert "expiresAt" not in data
    failed = running.finished(TaskStatus.FAILED, T0, RETENTION, Failure.cancelled())
    data = failed.to_json()
    assert data["failures"] == [{"code": "CANCELLED", "description": "The task was cancelled."}]
    assert data["finishedAt"] == "2026-01-01T10:00:00.123Z"
    assert data["expiresAt"] == "2026-01-31T10:00:00.123Z"


def test_failures_are_capped_and_counted() -> None:
    """At most 100 failures are kept; itemsFailed counts all; a whole-task failure goes first."""
    running = new_task().started(T0, 300)
    many = [Failure("WDE0075", f"bad {k}", {"itemId": str(k)}) for k in range(150)]
    after = running.with_batch(10, 150, many, "z")
    assert len(after.failures) == MAX_FAILURES
    assert after.items_failed == 150
    assert after.with_batch(0, 5, many[:5], None).failures == after.failures
    failed = after.finished(TaskStatus.FAILED, T0, RETENTION, Failure("WDE0054", "down"))
    assert failed.failures[0].code == "WDE0054"
    assert len(failed.failures) == MAX_FAILURES


@st.composite
def tasks(draw: st.DrawFn) -> Task:
    """Any reachable task snapshot."""
    task = new_task(draw(st.text(min_size=1, max_size=10)))
    clock = ManualClock(T0)
    if draw(st.booleans()):
        task = task.started(
            clock.advance(draw(st.integers(0, 10**6)) / 1000), draw(st.integers(0, 10**6))
        )
        for _ in range(draw(st.integers(0, 3))):
            failures = [
                Failure(
                    draw(st.sampled_from(["WDE0075", "WDE0073"])),
                    draw(st.text(max_size=5)),
                    {"itemId": draw(st.text(max_size=5))},
                )
                for _ in range(draw(st.integers(0, 45)))
            ]
            task = task.with_batch(
                draw(st.integers(0, 100)),
                len(failures),
                failures,
                draw(st.none() | st.text(max_size=5)),
            )
        if draw(st.booleans()):
            task = task.cancel_was_requested()
        ending = draw(st.sampled_from(["running", "completed", "failed"]))
        if ending == "completed":
            task = task.finished(TaskStatus.COMPLETED, clock.advance(1.5), RETENTION)
        elif ending == "failed":
            task = task.finished(
                TaskStatus.FAILED, clock.advance(2), RETENTION, Failure.cancelled()
            )
    elif draw(st.booleans()):
        task = task.finished(TaskStatus.FAILED, clock.advance(1), RETENTION, Failure.cancelled())
    return task


@given(tasks())
def test_json_roundtrip(task: Task) -> None:
    """from_json(to_json(t)) == t for every reachable snapshot (checkpoint passed aside)."""
    assert Task.from_json(task.to_json(), checkpoint=task.checkpoint) == task


def test_from_json_reports_every_violation() -> None:
    """A broken task JSON lists each problem by path, prefixed with the given path."""
    bad = {
        "id": "",
        "type": 5,
        "status": "DONE",
        "startedAt": "yesterday",
        "itemsSucceeded": -1,
        "itemsFailed": 1.5,
        "failures": [{"code": ""}, 3],
        "bogus": True,
        "cancelRequested": "yes",
    }
    with pytest.raises(InvalidTask) as info:
        Task.from_json(bad, path="task")
    fields = {v.field for v in info.value.violations}
    assert {
        "task.id",
        "task.type",
        "task.status",
        "task.startedAt",
        "task.itemsSucceeded",
        "task.itemsFailed",
        "task.estimatedItemCount",
        "task.failures.0.code",
        "task.failures.0.description",
        "task.failures.1",
        "task.bogus",
        "task.cancelRequested",
    } <= fields
    assert all(field.startswith("task") for field in fields)


def test_from_json_checks_state_consistency() -> None:
    """startedAt on a NEW task, or a finished task without finishedAt, are violations."""
    data = new_task().to_json()
    data["startedAt"] = "2026-01-01T00:00:00Z"
    with pytest.raises(InvalidTask) as info:
        Task.from_json(data)
    assert [v.field for v in info.value.violations] == ["task.startedAt"]
    done = new_task().started(T0, 1).finished(TaskStatus.COMPLETED, T0, RETENTION).to_json()
    del done["finishedAt"]
    with pytest.raises(InvalidTask) as info:
        Task.from_json(done)
    assert [v.field for v in info.value.violations] == ["task.finishedAt"]
    with pytest.raises(InvalidTask):
        Task.from_json([])


def parse_any(value: Any, path: str) -> tuple[TaskOptions | None, list[Violation]]:
    """Options parser that needs ``dataCollectionId``."""
    if isinstance(value, Mapping) and isinstance(value.get("dataCollectionId"), str):
        return RawOptions(value["dataCollectionId"], dict(value)), []
    return None, [Violation(f"{path}.dataCollectionId", "required")]


def test_from_json_with_task_types_parses_options() -> None:
    """With registered types, unknown types and bad options are violations."""
    executor: Any = None
    types = {
        "DELETE_BY_QUERY": TaskType("DELETE_BY_QUERY", "deleteByQueryOptions", parse_any, executor)
    }
    assert Task.from_json(new_task().to_json(), types) == new_task()
    data = new_task().to_json()
    data["type"] = "OTHER"
    with pytest.raises(InvalidTask) as info:
        Task.from_json(data, types)
    assert "task.type" in {v.field for v in info.value.violations}
    data = new_task().to_json()
    data["deleteByQueryOptions"] = {}
    with pytest.raises(InvalidTask) as info:
        Task.from_json(data, types)
    assert [v.field for v in info.value.violations] == [
        "task.deleteByQueryOptions.dataCollectionId"
    ]


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9999, 1, 1),
        timezones=st.just(timezone.utc) | st.just(timezone(timedelta(hours=-5))),
    )
)
def test_timestamps_roundtrip_at_milliseconds(moment: datetime) -> None:
    """format_timestamp gives ms + Z and parse_timestamp reads it back to the same instant."""
    text = format_timestamp(moment)
    assert text.endswith("Z")
    assert len(text) == 24
    assert parse_timestamp(text) == utc_ms(moment)


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00", "nope", "", 5])
def test_bad_timestamps_are_rejected(text: Any) -> None:
    """A timestamp without a zone, or not a timestamp, raises ValueError."""
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_manual_clock_moves_only_forward() -> None:
    """ManualClock advances and sets forward; backwards raises ValueError."""
    clock = ManualClock(datetime(2026, 1, 1))
    assert clock.now() == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert clock.advance(1.5) == datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=timezone.utc)
    clock.set(datetime(2026, 2, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_system_clock_is_utc_milliseconds() -> None:
    """SystemClock gives aware UTC times truncated to milliseconds."""
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0
