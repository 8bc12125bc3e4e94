"""Reading tasks back: get_task of unknown ids and list_tasks paging (docs/lifecycle.md)."""

from __future__ import annotations

from typing import Any

import pytest
from reference_tasks import (
    copy_task,
    paths,
)

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import InvalidRequest, TaskNotFound


@pytest.mark.parametrize("task_id", ["nope", "", "00000000-0000-0000-0000-000000000000"])
def test_unknown_ids_raise_task_not_found(engine: TaskEngine, task_id: str) -> None:
    """get, cancel, progress and wait refuse unknown ids; nothing is created by asking."""
    for call in (engine.get_task, engine.cancel_task, engine.get_progress):
        with pytest.raises(TaskNotFound):
            call(task_id)
    with pytest.raises(TaskNotFound):
        engine.wait(task_id, timeout=0.01)
    assert engine.list_tasks().total == 0


def test_list_newest_first_with_paging(engine: TaskEngine, clock: ManualClock) -> None:
    """list_tasks is newest first; limit/offset page it; count/offset/total are right."""
    ids = []
    for _ in range(7):
        ids.append(engine.create_task(copy_task()).id)
        clock.advance(1)
    newest_first = list(reversed(ids))
    page = engine.list_tasks(limit=3, offset=0)
    assert [t.id for t in page.tasks] == newest_first[:3]
    assert page.to_json()["metadata"] == {"count": 3, "offset": 0, "total": 7}
    page = engine.list_tasks(limit=3, offset=6)
    assert [t.id for t in page.tasks] == newest_first[6:]
    assert page.to_json()["metadata"] == {"count": 1, "offset": 6, "total": 7}
    assert engine.list_tasks(offset=50).to_json()["metadata"] == {
        "count": 0,
        "offset": 50,
        "total": 7,
    }
    assert [t.id for t in engine.list_tasks().tasks] == newest_first


def test_list_newest_first_within_the_same_millisecond(engine: TaskEngine) -> None:
    """Tasks created at the same instant still list newest first (creation order)."""
    ids = [engine.create_task(copy_task()).id for _ in range(5)]
    assert [t.id for t in engine.list_tasks().tasks] == list(reversed(ids))


def test_list_default_limit_is_30(engine: TaskEngine) -> None:
    """Without paging, at most 30 tasks come back; total counts them all."""
    for _ in range(35):
        engine.create_task(copy_task())
    page = engine.list_tasks().to_json()
    assert len(page["tasks"]) == 30
    assert page["metadata"]["total"] == 35


@pytest.mark.parametrize(
    ("limit", "offset", "field"),
    [
        (0, 0, "paging.limit"),
        (-1, 0, "paging.limit"),
        (101, 0, "paging.limit"),
        ("5", 0, "paging.limit"),
        (True, 0, "paging.limit"),
        (5, -1, "paging.offset"),
    ],
)
def test_list_refuses_bad_paging(engine: TaskEngine, limit: Any, offset: Any, field: str) -> None:
    """Bad paging is an InvalidRequest naming paging.limit / paging.offset."""
    with pytest.raises(InvalidRequest) as caught:
        engine.list_tasks(limit=limit, offset=offset)
    assert field in paths(caught.value)
