"""``PostgresStorage.estimate_count`` reads its sample in one query (``_pgestimate``) and
gives the estimate the window-by-window reads of ``_estimate`` give, on the same sample.

Against a real server, with the sample made small (few windows of few rows, a low exact
threshold) so that examples stay quick: for any items, filter and size the two agree,
and below the threshold both are the exact count.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied

from taskengine.filters import compile_filter
from taskengine.storage import _estimate, _pgestimate
from taskengine.storage._pgfilter import BACKEND, DOCUMENT
from taskengine.storage._pgitems import _ENV_CODE, _target
from taskengine.storage._sqlfilter import pushed_condition
from taskengine.storage.base import Environment
from taskengine.storage.postgres import PgDatabase, PostgresStorage

pytestmark = pytest.mark.postgres

SPECS: list[Any] = [
    {"k": 3},
    {"k": {"$lt": 4}},
    {"name": {"$regex": "3$"}},  # decided partly in Python
    {"k": 99},
    {"k": {"$gte": 0}},
]


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    return pg_module_database


@pytest.fixture(autouse=True)
def small_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 5 rows, 7 of them, an exact count up to 40 items (both modules)."""
    for module in (_estimate, _pgestimate):
        monkeypatch.setattr(module, "WINDOWS", 7)
        monkeypatch.setattr(module, "ROWS", 5)
        monkeypatch.setattr(module, "EXACT_UP_TO", 40)


def _by_windows(storage: PostgresStorage, name: str, accept: Any) -> Any:
    """The estimate of ``_estimate.estimate_on_reads`` (a query per window)."""
    return _estimate.estimate_on_reads(
        storage.database.read,
        lambda conn: _target(conn, name, Environment.LIVE),
        _ENV_CODE[Environment.LIVE],
        "%s",
        pushed_condition(accept, BACKEND, DOCUMENT),
        accept,
        lambda: storage.count(name, "LIVE", accept),
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, 300),
    st.lists(st.integers(0, 9), min_size=1, max_size=30),
    st.sampled_from(range(len(SPECS))),
    st.booleans(),
)
def test_one_query_gives_the_estimate_of_the_window_reads(
    shared: PgDatabase, size: int, values: list[int], spec: int, python: bool
) -> None:
    """Same items, same filter (compiled, or a plain function): the same Count."""
    storage = emptied(shared, "e")
    storage.create_collection("e")
    items = [
        {
            "_id": f"i{n:04d}",
            "k": values[n % len(values)],
            "name": f"n{n}",
            **({"z": "\x00"} if n % 13 == 0 else {}),
        }
        for n in range(size)
    ]
    storage.insert_items("e", "LIVE", items)
    compiled = compile_filter(SPECS[spec])
    accept = (lambda item: compiled(item)) if python else compiled
    got = storage.estimate_count("e", "LIVE", accept)
    assert got == _by_windows(storage, "e", accept)
    exact = sum(1 for item in items if compiled(item))
    if size <= 40:
        assert (got.value, got.exact) == (exact, True)
    else:
        assert got.exact is False


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 60), st.integers(1, 9), st.booleans())
def test_the_walk_keeps_every_grid_th_key_and_counts_them_all(
    shared: PgDatabase, size: int, grid: int, other: bool
) -> None:
    """One pass over the keys: the keys at positions 0, grid, 2 grid, ... of this item
    set alone (another collection's keys interleave with them), and the exact count; an
    estimate hands the same keys and spacing on."""
    storage = emptied(shared, "w", "x")
    storage.create_collection("w")
    storage.create_collection("x")
    ids = [f"{n:03d}" for n in range(0, 2 * size, 2)]
    storage.insert_items("w", "LIVE", [{"_id": item_id} for item_id in ids])
    if other:
        storage.insert_items("x", "LIVE", [{"_id": f"{n:03d}"} for n in range(1, 2 * size, 2)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pgestimate, "GRID", grid)
        with storage.database.read() as conn:
            coll = _target(conn, "w", Environment.LIVE)
            points, total = _pgestimate.walk_grid(conn, coll, _ENV_CODE[Environment.LIVE])
            told: list[Any] = []
            _pgestimate.estimate_in_one_query(
                conn,
                coll,
                _ENV_CODE[Environment.LIVE],
                None,
                lambda item: True,
                lambda keys, spacing: told.append((keys, spacing)),
            )
    assert points == ids[::grid]
    assert total == size
    assert told == ([(ids[::grid], grid)] if ids else [])
