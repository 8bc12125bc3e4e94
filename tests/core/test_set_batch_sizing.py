"""Set-based batches sized by time (``SetBatchSizing``, ``TaskEngine(set_batch_seconds=)``).

The sizing rule is a law over any batch time: within bounds, at most twice the rows up and
a quarter down a batch, up when a batch took under half its time, never up when it took
over it. The engine feeds it each batch's time: a stand-in timer (no sleeps) decides it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine import MemoryStorage, SQLiteStorage, SQLiteTaskStore, TaskEngine, _setstep
from taskengine._setstep import SetBatchSizing

sizings = st.builds(
    lambda low, spread, seconds: SetBatchSizing(low, low, low + spread, seconds),
    st.integers(1, 10_000),
    st.integers(0, 100_000),
    st.floats(0.001, 10.0),
)


@given(sizings, st.data(), st.floats(0.0, 100.0))
def test_the_next_size_follows_the_batch_time(
    sizing: SetBatchSizing, data: st.DataObject, elapsed: float
) -> None:
    """Within ``[low, high]``; at most 2x up, 1/4 down; doubled (up to ``high``) after a
    batch of at most half the time; never more after a batch over the time."""
    rows = data.draw(st.integers(sizing.low, sizing.high))
    seconds = sizing.seconds
    assert seconds is not None
    after = sizing.next(rows, elapsed)
    assert sizing.low <= after <= sizing.high
    assert after <= 2 * rows
    assert after >= min(sizing.high, max(sizing.low, rows // 4))
    if elapsed * 2 <= seconds:
        assert after == min(sizing.high, 2 * rows)
    assert sizing.next(rows, seconds / 2) == min(sizing.high, 2 * rows)  # half: still up
    if elapsed > seconds:
        assert after <= rows
    if elapsed >= 4 * seconds:
        assert after == max(sizing.low, int(rows * 0.25))


@given(st.integers(1, 10**6), st.floats(0.0, 100.0))
def test_a_fixed_size_stays(rows: int, elapsed: float) -> None:
    """``SetBatchSizing.fixed``: every batch the same rows, whatever it took."""
    assert SetBatchSizing.fixed(rows).next(rows, elapsed) == rows


class Limits(SQLiteStorage):
    """SQLiteStorage that records the ``limit`` of every set-based batch."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.limits: list[int] = []

    def change_matching(self, *args: Any, **kwargs: Any) -> Any:
        self.limits.append(kwargs["limit"])
        return super().change_matching(*args, **kwargs)


class FixedLimits(Limits):
    """The same, declaring that its batches are not to be sized by time."""

    batches_by_time = False


class MemoryLimits(MemoryStorage):
    """MemoryStorage that records the ``limit`` of every set-based batch."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []

    def change_matching(self, *args: Any, **kwargs: Any) -> Any:
        self.limits.append(kwargs["limit"])
        return super().change_matching(*args, **kwargs)


@pytest.fixture
def storage() -> Iterator[Limits]:
    with Limits() as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"i{n:04}", "v": n} for n in range(1000)])
        yield storage


def copy_all(
    storage: Limits | MemoryLimits, monkeypatch: pytest.MonkeyPatch, took: float, **settings: Any
) -> None:
    """A COPY_FIELD_DATA over the 1,000 items, each batch ``took`` seconds by the timer."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(_setstep, "_timer", lambda: next(ticks) * took)
    if isinstance(storage, SQLiteStorage):
        settings["task_store"] = SQLiteTaskStore(storage.database)
    engine = TaskEngine(storage, batch_size=2, **settings)
    task = engine.create_task(
        {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "c",
                "sourceFieldKey": "v",
                "targetFieldKey": "w",
            },
        }
    )
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert (done.status.value, done.items_succeeded) == ("COMPLETED", 1000)
    assert all(item["w"] == item["v"] for item in storage.find("c", "LIVE"))


def test_fast_batches_grow_to_a_hundred_times_batch_size(
    storage: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches far under ``set_batch_seconds``: from ten times ``batch_size``, doubled
    each batch, up to a hundred times."""
    copy_all(storage, monkeypatch, took=0.001)
    assert storage.limits == [20, 40, 80, 160, 200, 200, 200, 200]


def test_slow_batches_shrink_to_batch_size(
    storage: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 1 s against 0.25 s: a quarter each batch, down to ``batch_size``."""
    copy_all(storage, monkeypatch, took=1.0, set_batch_seconds=0.25)
    assert storage.limits[:4] == [20, 5, 2, 2]
    assert set(storage.limits[2:]) == {2}


def test_batches_on_time_keep_their_size(storage: Limits, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of exactly ``set_batch_seconds`` keep the first size."""
    copy_all(storage, monkeypatch, took=0.5, set_batch_seconds=0.5)
    assert set(storage.limits) == {20}


def test_a_set_batch_size_is_kept_whatever_the_time(
    storage: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit ``set_batch_size`` is every batch's, fast or slow; the engine says so."""
    copy_all(storage, monkeypatch, took=0.001, set_batch_size=300)
    assert storage.limits == [300, 300, 300, 300]
    engine = TaskEngine(storage, batch_size=2, set_batch_size=300)
    assert (engine.set_batch_size, engine.set_batch_seconds) == (300, None)
    assert TaskEngine(storage, batch_size=2).set_batch_seconds == 0.1


@pytest.mark.parametrize("kind", [FixedLimits, MemoryLimits])
def test_a_storage_not_sized_by_time_keeps_ten_times_batch_size(
    kind: type[FixedLimits | MemoryLimits], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a storage without ``batches_by_time`` (MemoryStorage, or an adapter that says
    ``False``) every set-based batch covers ten times ``batch_size``, fast or slow."""
    storage = kind()
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"i{n:04}", "v": n} for n in range(1000)])
    copy_all(storage, monkeypatch, took=0.001)
    assert storage.limits == [20] * 50
    assert (SQLiteStorage.batches_by_time, MemoryStorage.batches_by_time) == (True, False)
