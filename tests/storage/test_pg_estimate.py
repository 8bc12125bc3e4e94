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


def _walk_of(storage: PostgresStorage, name: str, split: str | None, broken: bool = False) -> Any:
    """``walk_keys`` of the item set ``name`` (LIVE), in two halves at ``split`` on a spare
    connection (closed first when ``broken``) unless ``split`` is ``None``."""
    with storage.database.read() as conn, storage.database.spare() as spare:
        assert spare is not None
        if broken:
            spare.close()
        coll = _target(conn, name, Environment.LIVE)
        return _pgestimate.walk_keys(conn, coll, _ENV_CODE[Environment.LIVE], split, spare)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, 80),
    st.integers(1, 9),
    st.one_of(
        st.none(),
        st.integers(-5, 200).map(lambda n: f"{n:03d}"),
        st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=3),
    ),  # as stored: no NUL, no lone surrogate
    st.booleans(),
)
def test_a_walk_in_two_halves_keeps_keys_at_their_positions(
    shared: PgDatabase, size: int, grid: int, split: str | None, broken: bool
) -> None:
    """Whatever the split key (inside, outside, between keys, none) and even when the
    helper's connection is broken: every kept key is the key at its position, the first
    key is kept, kept keys are 1 to GRID positions apart, and the count is exact."""
    storage = emptied(shared, "h", "x")
    storage.create_collection("h")
    storage.create_collection("x")
    ids = [f"{n:03d}" for n in range(0, 2 * size, 2)]
    storage.insert_items("h", "LIVE", [{"_id": item_id} for item_id in ids])
    storage.insert_items("x", "LIVE", [{"_id": f"{n:03d}"} for n in range(1, 2 * size, 2)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pgestimate, "GRID", grid)
        walk = _walk_of(storage, "h", split, broken)
    assert walk.total == size
    assert walk.points == [ids[at] for at in walk.positions]
    assert walk.positions[:1] == ([0] if ids else [])
    ends = [*walk.positions[1:], size] if ids else []
    steps = [b - a for a, b in zip(walk.positions, ends, strict=True)]
    assert all(0 < step <= grid for step in steps)  # the last: the keys from the last point
    if split is None:
        assert walk.positions == list(range(0, size, grid))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(41, 300),
    st.lists(st.integers(0, 9), min_size=1, max_size=30),
    st.sampled_from(range(len(SPECS))),
    st.integers(0, 320),
)
def test_an_estimate_from_two_halves_is_the_estimate_of_the_window_reads(
    shared: PgDatabase, size: int, values: list[int], spec: int, split: int
) -> None:
    """The sample read from a walk in two halves is the same windows: the same Count."""
    storage = emptied(shared, "e")
    storage.create_collection("e")
    storage.insert_items(
        "e", "LIVE", [{"_id": f"i{n:04d}", "k": values[n % len(values)]} for n in range(size)]
    )
    accept = compile_filter(SPECS[spec])
    with storage.database.read() as conn, storage.database.spare() as spare:
        coll = _target(conn, "e", Environment.LIVE)
        got = _pgestimate.estimate_in_one_query(
            conn,
            coll,
            _ENV_CODE[Environment.LIVE],
            pushed_condition(accept, BACKEND, DOCUMENT),
            accept,
            split=f"i{split:04d}",
            spare=spare,
        )
    assert got == _by_windows(storage, "e", accept)


def test_a_large_item_set_is_walked_in_two_halves_by_its_statistics(
    shared: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``estimate_count`` walks in two halves, split inside the item set, once the
    table's statistics put it above ``HALVES_ABOVE`` items (and never inside a
    transaction); the estimate is the window reads' all the same."""
    storage = emptied(shared, "m")
    storage.create_collection("m")
    ids = [f"k{n:04d}" for n in range(400)]
    storage.insert_items(
        "m", "LIVE", [{"_id": item_id, "k": n % 7} for n, item_id in enumerate(ids)]
    )
    with storage.database.read() as conn:
        conn.execute("ANALYZE taskengine_items")
        coll = _target(conn, "m", Environment.LIVE)
        code = _ENV_CODE[Environment.LIVE]
        with pytest.MonkeyPatch.context() as patch:  # a small table: no histogram read
            patch.setattr(_pgestimate, "_MIDDLE", "SELECT no_such_column")
            assert _pgestimate.middle_key(conn, coll, code) is None  # 400 items: one piece
        monkeypatch.setattr(_pgestimate, "HALVES_ABOVE", 100)
        middle = _pgestimate.middle_key(conn, coll, code)
    assert middle is not None
    assert ids[0] < middle <= ids[-1]
    assert abs(ids.index(middle) - 200) <= 120  # about the middle, by a histogram
    walked: list[tuple[str | None, str | None]] = []
    real = _pgestimate.walk_grid

    def spy(conn: Any, coll: int, env: int, lower: Any = None, upper: Any = None) -> Any:
        walked.append((lower, upper))
        return real(conn, coll, env, lower, upper)

    monkeypatch.setattr(_pgestimate, "walk_grid", spy)
    accept = compile_filter({"k": 3})
    assert storage.estimate_count("m", "LIVE", accept) == _by_windows(storage, "m", accept)
    assert sorted(walked, key=str) == sorted([(None, middle), (middle, None)], key=str)
    walked.clear()
    with storage.atomic():
        storage.estimate_count("m", "LIVE", accept)
    assert walked == [(None, None)]
