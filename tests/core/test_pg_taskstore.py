"""PostgresTaskStore against a real server: the task-store conformance suite, its schema and
row format, sharing a transaction with item writes, locks that keep claims out, NOTIFY,
processes racing on one database, and engines running tasks through it.

(The hypothesis state machine that drives it beside memory and SQLite is in
test_taskstore_ownership.py.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import attrs
import psycopg
import pytest
from reference_tasks import edit_task
from test_taskstore_processes import RACERS, race

from taskengine import MemoryStorage, PostgresTaskStore, TaskEngine, TaskStatus
from taskengine import _taskrow as rows
from taskengine.errors import LeaseLost, StorageError
from taskengine.storage._pgdatabase import PgDatabase, PostgresError
from taskengine.task import Failure, RawOptions, Task
from taskengine.taskstore import TaskStore
from taskengine.testing import TaskStoreConformance, run_taskstore_conformance

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
WAIT = 30.0  # seconds: a bound for what should take milliseconds
TABLES = "taskengine_tasks, taskengine_leaders"


def make_task(task_id: str, created_at: datetime = T0) -> Task:
    """A NEW task with raw options (what the store reads back)."""
    return Task(
        id=task_id,
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=created_at,
    )


@attrs.define
class Holder:
    """Stands in for a ``PostgresStorage``: anything with a ``.database``."""

    database: PgDatabase


@pytest.fixture
def database(pg_database: str) -> Iterator[PgDatabase]:
    """A PgDatabase on a fresh database."""
    with PgDatabase(pg_database, max_size=4) as opened:
        yield opened


@pytest.fixture
def store(database: PgDatabase) -> Iterator[PostgresTaskStore]:
    """A task store on the fresh database."""
    task_store = PostgresTaskStore(database)
    yield task_store
    task_store.close()


# The conformance suite


class TestPostgresTaskStore(TaskStoreConformance):
    """The PostgreSQL task store, on a database of its own (opened from a DSN), keeps every
    ownership rule."""

    @pytest.fixture
    def task_store(self, pg_database: str) -> Iterator[TaskStore]:
        """A fresh store that owns its PgDatabase."""
        task_store = PostgresTaskStore(pg_database)
        yield task_store
        task_store.close()


class TestPostgresTaskStoreOnSharedDatabase(TaskStoreConformance):
    """The PostgreSQL task store on a storage's shared PgDatabase keeps every rule."""

    @pytest.fixture
    def task_store(self, database: PgDatabase) -> TaskStore:
        """A fresh store on a shared database (through its ``.database``)."""
        return PostgresTaskStore(Holder(database))


def test_run_taskstore_conformance_passes(database: PgDatabase) -> None:
    """Without pytest's class, run_taskstore_conformance finds no failure; every check gets
    the same database emptied (a store opened again on existing tables)."""

    def fresh() -> PostgresTaskStore:
        with database.transaction() as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
        return PostgresTaskStore(database)

    PostgresTaskStore(database)  # the tables exist before the first TRUNCATE
    assert run_taskstore_conformance(fresh) == []


# Sources, schema, row format


def test_a_dsn_store_owns_its_database(pg_database: str) -> None:
    """Opened from a DSN, the store closes its own database; a shared one stays open."""
    owned = PostgresTaskStore(pg_database)
    owned.close()
    owned.close()  # idempotent
    assert owned.database.closed
    with PgDatabase(pg_database) as shared:
        for source in (shared, Holder(shared)):
            store = PostgresTaskStore(source)
            assert store.database is shared
            store.close()
            assert not shared.closed
            assert len(store) == 0


def test_other_sources_are_refused() -> None:
    """A path-like, a number or an object without a PgDatabase is a TypeError."""
    for source in (42, b"postgresql://", Holder(None)):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="DSN, a PgDatabase or a PostgresStorage"):
            PostgresTaskStore(source)


def test_shares_transactions_only_with_its_own_database(
    store: PostgresTaskStore, pg_database: str
) -> None:
    """shares_transactions_with is True for a storage on the store's PgDatabase only."""
    assert store.shares_transactions_with(Holder(store.database))  # type: ignore[arg-type]
    assert not store.shares_transactions_with(MemoryStorage())
    with PgDatabase(pg_database) as other:
        assert not store.shares_transactions_with(Holder(other))  # type: ignore[arg-type]


def test_schema_is_created_once_and_versioned(pg_database: str) -> None:
    """The first store creates both tables at taskstore version 2; a store opened later
    keeps the tasks and leases it finds."""
    first = PostgresTaskStore(pg_database)
    first.insert(make_task("a"))
    lease = first.claim("a", "me", T0, LEASE)
    assert first.database.schema_version("taskstore") == 2
    first.close()
    again = PostgresTaskStore(pg_database)
    try:
        assert again.get("a") == make_task("a")
        assert again.lease_of("a") == lease
        with again.database.read() as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE 'taskengine%'"
                )
            }
        assert tables == {"taskengine_schema", "taskengine_tasks", "taskengine_leaders"}
    finally:
        again.close()


def test_concurrent_first_opens_create_the_schema_once(pg_database: str) -> None:
    """Eight threads opening stores on a new database at once all succeed."""
    opened: list[PostgresTaskStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_one() -> None:
        try:
            barrier.wait(WAIT)
            opened.append(PostgresTaskStore(pg_database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    try:
        assert errors == []
        assert len(opened) == 8
        opened[0].insert(make_task("a"))
        assert all(len(store) == 1 for store in opened)
    finally:
        for store in opened:
            store.close()


def test_a_newer_schema_is_refused_and_left_untouched(database: PgDatabase) -> None:
    """A database whose taskstore schema is newer than this code raises PostgresError."""
    PostgresTaskStore(database).insert(make_task("a"))
    with database.transaction() as conn:
        conn.execute("UPDATE taskengine_schema SET version = 99 WHERE component = 'taskstore'")
    with pytest.raises(PostgresError, match="schema version 99"):
        PostgresTaskStore(database)
    assert database.schema_version("taskstore") == 99
    with database.read() as conn:
        assert conn.execute("SELECT id FROM taskengine_tasks").fetchall() == [("a",)]


def test_rows_are_the_sqlite_row_format(store: PostgresTaskStore) -> None:
    """A stored task's columns are _taskrow's row (the checkpoint as UTF-8 bytes), and
    creation order is seq."""
    task = (
        make_task("a")
        .started(T0, 10)
        .with_batch(3, 1, [Failure("WDE0100", "bad", {"itemId": "x"})], "item-0003")
    )
    store.insert(make_task("b"))
    store.save(task)
    with store.database.read() as conn:
        found = conn.execute(
            f"SELECT seq, {rows.COLUMNS} FROM taskengine_tasks ORDER BY seq"
        ).fetchall()
    expected = list(rows.encode(task))
    expected[11] = b"item-0003"
    assert [row[0] for row in found] == [1, 2]
    assert list(found[1][1:]) == expected


def test_any_checkpoint_round_trips(store: PostgresTaskStore) -> None:
    """Checkpoints holding NUL and non-BMP characters (item ids may) are stored exactly."""
    for n, checkpoint in enumerate(["a\x00b", "\U0001f600é", "", "\x00"]):
        task = make_task(f"t{n}").started(T0, 1).with_batch(1, 0, [], checkpoint)
        store.insert(task)
        assert store.get(task.id) == task
        updated = store.update(task.id, lambda current: current)
        assert updated is not None
        assert updated.checkpoint == checkpoint


def test_ids_postgresql_cannot_hold(store: PostgresTaskStore) -> None:
    """Ids with NUL or a lone surrogate are never stored: lookups find nothing, fences
    refuse, an owner or role with NUL is a ValueError, and storing such a task fails
    with StorageError."""
    store.insert(make_task("a"))
    for odd in ("a\x00", "\ud800"):
        lease = store.claim("a", "me", T0, LEASE)
        assert lease is not None
        forged = attrs.evolve(lease, task_id=odd)
        assert store.get(odd) is None
        assert store.lease_of(odd) is None
        assert store.leader_of(odd) is None
        assert store.claim(odd, "me", T0, LEASE) is None
        assert store.update(odd, lambda task: task) is None
        assert store.delete([odd]) == 0
        store.release(forged)
        store.resign(forged)
        with pytest.raises(LeaseLost):
            store.check_fence(forged, T0)
        with pytest.raises(LeaseLost):
            store.renew(forged, T0, LEASE)
        with pytest.raises(LeaseLost):
            store.update(odd, lambda task: task, forged, now=T0)
        with pytest.raises(LeaseLost):
            store.save(make_task(odd), forged, now=T0)
        stranger = attrs.evolve(lease, owner=odd)
        with pytest.raises(LeaseLost):
            store.check_fence(stranger, T0)
        with pytest.raises(LeaseLost):
            store.save(make_task("a"), stranger, now=T0)
        store.release(lease)
        with pytest.raises(StorageError):
            store.insert(make_task(odd))
    with pytest.raises(ValueError, match="NUL"):
        store.claim("a", "me\x00", T0, LEASE)
    with pytest.raises(ValueError, match="NUL"):
        store.lead("role\x00", "me", T0, LEASE)
    assert len(store) == 1


def test_paging_delete_and_lists(store: PostgresTaskStore) -> None:
    """page is newest first with the total; delete ignores unknown and repeated ids;
    unfinished is oldest first; expired lists finished tasks once they expired."""
    for n in range(5):
        store.insert(make_task(f"t{n}", T0 + n * timedelta(seconds=1)))
    done = store.get("t1")
    assert done is not None
    finished = done.started(T0, 0).finished(TaskStatus.COMPLETED, T0, timedelta(hours=1))
    store.save(finished)
    tasks, total = store.page(2, 1)
    assert ([task.id for task in tasks], total) == (["t3", "t2"], 5)
    assert store.page(10, 2**70) == ([], 5)
    assert store.page(-1, 0) == ([], 5)
    assert [task.id for task in store.unfinished()] == ["t0", "t2", "t3", "t4"]
    assert finished.expires_at is not None
    assert store.expired(finished.expires_at, 10) == ["t1"]
    assert store.expired(finished.expires_at - timedelta(milliseconds=1), 10) == []
    assert store.delete(["t2", "t2", "nope", "t4"]) == 2
    assert len(store) == 3
    assert store.claimable(T0, 2**70) == ["t0", "t3"]


def test_overlapping_deletes_from_threads_never_deadlock(store: PostgresTaskStore) -> None:
    """Four threads deleting the same 200 ids in different orders: each id is removed once."""
    ids = [f"t{n:03d}" for n in range(200)]
    for task_id in ids:
        store.insert(make_task(task_id))
    removed: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def sweep(k: int) -> None:
        try:
            order = ids[k::4] + ids if k % 2 else list(reversed(ids))
            barrier.wait(WAIT)
            for start in range(0, len(order), 50):
                removed.append(store.delete(order[start : start + 50]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert sum(removed) == 200
    assert len(store) == 0


# One transaction with the item writes; locks


def test_a_batch_and_its_fenced_update_commit_together(store: PostgresTaskStore) -> None:
    """Inside one transaction, an item write and the fenced update commit together; a
    refused fence or an error rolls both back."""
    database = store.database
    with database.transaction() as conn:
        conn.execute("CREATE TABLE items (k TEXT PRIMARY KEY)")
    store.insert(make_task("a"))
    lease = store.claim("a", "me", T0, LEASE)
    assert lease is not None

    def batch(key: str, now: datetime) -> None:
        with database.transaction() as conn:
            store.check_fence(lease, now)
            conn.execute("INSERT INTO items VALUES (%s)", (key,))
            store.update("a", lambda task: task.with_batch(1, 0, [], key), lease, now=now)

    store.update("a", lambda task: task.started(T0, 10), lease, now=T0)
    batch("one", T0)
    with pytest.raises(LeaseLost):
        batch("late", lease.expires_at)  # the fence is checked first: nothing written

    def failing_batch() -> None:
        with database.transaction() as conn:
            conn.execute("INSERT INTO items VALUES ('failed')")
            store.update("a", lambda task: task.with_batch(1, 0, [], "failed"), lease, now=T0)
            raise ZeroDivisionError("after the writes")

    with pytest.raises(ZeroDivisionError):
        failing_batch()
    with database.read() as conn:
        assert conn.execute("SELECT k FROM items").fetchall() == [("one",)]
    task = store.get("a")
    assert task is not None
    assert (task.items_succeeded, task.checkpoint) == (1, "one")


def test_a_checked_fence_keeps_claims_out_until_commit(store: PostgresTaskStore) -> None:
    """A claim at the lease's end waits while a transaction holds the checked fence, and
    wins only after that transaction commits, with the next token."""
    store.insert(make_task("a"))
    lease = store.claim("a", "me", T0, LEASE)
    assert lease is not None
    claimed: list[object] = []
    thread = threading.Thread(
        target=lambda: claimed.append(store.claim("a", "thief", lease.expires_at, LEASE))
    )
    with store.database.transaction():
        store.check_fence(lease, T0)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "a claim went through a fence held in a transaction"
    thread.join(WAIT)
    assert [getattr(got, "token", None) for got in claimed] == [2]


def test_claimable_skips_rows_being_changed_but_not_rows_being_listed(
    store: PostgresTaskStore, pg_database: str
) -> None:
    """claimable does not wait for a row another transaction is changing (a claim in
    flight): it lists the others; a row another poller is listing is still listed."""
    for n in range(3):
        store.insert(make_task(f"t{n}"))
    with psycopg.connect(pg_database) as changing, psycopg.connect(pg_database) as listing:
        changing.execute("UPDATE taskengine_tasks SET lease_token = 0 WHERE id = 't0'")
        listing.execute("SELECT 1 FROM taskengine_tasks WHERE id = 't1' FOR SHARE")
        started = time.monotonic()
        assert store.claimable(T0, 10) == ["t1", "t2"]
        assert time.monotonic() - started < 5
    assert store.claimable(T0, 10) == ["t0", "t1", "t2"]


# Notifications


def test_new_tasks_and_cancel_requests_are_notified(store: PostgresTaskStore) -> None:
    """insert notifies the task id on commit; so does an update that requests a cancel;
    nothing else does, and a rolled-back insert never does."""

    def insert_and_roll_back() -> None:
        with store.transaction():
            store.insert(make_task("b"))
            raise RuntimeError("rolled back")

    with store.listen() as listener:
        store.insert(make_task("a"))
        got = listener.get(WAIT)
        assert got is not None
        assert (got.channel, got.payload) == ("taskengine_tasks", "a")
        with pytest.raises(RuntimeError):
            insert_and_roll_back()
        store.update("a", lambda task: task.started(T0, 1))
        store.update("a", lambda task: task.with_batch(1, 0, [], "c"))
        assert listener.get(0.3) is None
        store.update("a", lambda task: task.cancel_was_requested())
        got = listener.get(WAIT)
        assert got is not None
        assert got.payload == "a cancel"
        store.update("a", lambda task: task.with_batch(1, 0, [], "d"))  # still cancelled
        assert listener.get(0.3) is None


# Processes on one database

CLAIMER = """
    import json, random, sys
    from datetime import datetime, timedelta, timezone
    from taskengine import PostgresTaskStore

    dsn, k = sys.argv[1], int(sys.argv[2])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lease = timedelta(seconds=60)
    store = PostgresTaskStore(dsn)
    ids = store.claimable(t0, 1000)
    random.Random(k).shuffle(ids)
    print("ready", flush=True)
    sys.stdin.readline()
    claims = []
    for now in (t0, t0 + lease + timedelta(seconds=1)):
        for task_id in ids:
            got = store.claim(task_id, f"proc-{k}", now, lease)
            if got is not None:
                claims.append([task_id, got.token])
    store.close()
    print(json.dumps({"listed": len(ids), "claims": claims}), flush=True)
"""


def test_processes_racing_to_claim_never_share_a_token(pg_database: str) -> None:
    """Four processes claim 40 tasks on one database, twice (the second round after
    expiry): each (task, token) is won by exactly one process, and tokens go 1 then 2."""
    store = PostgresTaskStore(pg_database)
    ids = [f"task-{n:03d}" for n in range(40)]
    for task_id in ids:
        store.insert(make_task(task_id))
    reports = race(CLAIMER, pg_database)  # type: ignore[arg-type]
    assert [report["listed"] for report in reports] == [40] * RACERS
    winners: dict[tuple[str, int], list[int]] = {}
    for k, report in enumerate(reports):
        for task_id, token in report["claims"]:
            winners.setdefault((task_id, token), []).append(k)
    try:
        assert sorted(winners) == sorted((task_id, token) for task_id in ids for token in (1, 2))
        assert all(len(procs) == 1 for procs in winners.values()), winners
        for task_id in ids:
            lease = store.lease_of(task_id)
            assert lease is not None
            assert (lease.owner, lease.token) == (f"proc-{winners[(task_id, 2)][0]}", 2)
    finally:
        store.close()


UPDATER = """
    import json, sys
    import attrs
    from taskengine import PostgresTaskStore

    store = PostgresTaskStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    seen = []
    for _ in range(100):
        got = store.update(
            "counter", lambda task: attrs.evolve(task, items_succeeded=task.items_succeeded + 1)
        )
        seen.append(got.items_succeeded)
    store.close()
    print(json.dumps(seen), flush=True)
"""


def test_processes_updating_one_task_lose_nothing(pg_database: str) -> None:
    """Four processes each add one to a task's counter 100 times: it ends at 400, and every
    update saw a value no other update saw."""
    store = PostgresTaskStore(pg_database)
    try:
        store.insert(make_task("counter"))
        reports = race(UPDATER, pg_database)  # type: ignore[arg-type]
        for seen in reports:
            assert seen == sorted(seen)
        assert sorted(value for seen in reports for value in seen) == list(range(1, 401))
        counter = store.get("counter")
        assert counter is not None
        assert counter.items_succeeded == 400
    finally:
        store.close()


ROUNDS = 30
ROLES = [f"role-{n}" for n in range(4)]
LEADER = """
    import json, random, sys
    from datetime import datetime, timedelta, timezone
    from taskengine import PostgresTaskStore

    dsn, k, rounds, roles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    term = timedelta(seconds=60)
    store = PostgresTaskStore(dsn)
    print("ready", flush=True)
    sys.stdin.readline()
    won, renewed = [], []
    shuffle = random.Random(k).shuffle
    for round_ in range(rounds):
        now = t0 + round_ * (term + timedelta(seconds=1))  # every earlier term has ended
        shuffle(roles)
        for role in roles:
            got = store.lead(role, f"proc-{k}", now, term)
            if got is not None:
                won.append([role, round_, got.token])
                again = store.lead(role, f"proc-{k}", now, term)
                if again is not None:
                    renewed.append([role, round_, again.token])
    store.close()
    print(json.dumps({"won": won, "renewed": renewed}), flush=True)
"""


def test_processes_racing_to_lead_have_one_winner_per_round(pg_database: str) -> None:
    """Four processes lead four roles on one database for 30 rounds, each after the last
    term ended (the first round inserts each role's row): each (role, round) has exactly
    one winner, whose token is the round's number + 1; a winner's renewal keeps it."""
    PostgresTaskStore(pg_database).close()
    reports = race(LEADER, pg_database, ROUNDS, *ROLES)  # type: ignore[arg-type]
    winners: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for k, report in enumerate(reports):
        for role, round_, token in report["won"]:
            winners.setdefault((role, round_), []).append((k, token))
        for role, round_, token in report["renewed"]:
            assert (k, token) in winners[(role, round_)]
    assert sorted(winners) == sorted((role, r) for role in ROLES for r in range(ROUNDS))
    assert all(len(won) == 1 for won in winners.values()), winners
    assert all(won[0][1] == key[1] + 1 for key, won in winners.items()), winners


# Engines


def test_an_engine_runs_tasks_on_a_postgres_task_store(pg_database: str) -> None:
    """TaskEngine(MemoryStorage(), task_store=PostgresTaskStore(dsn)) runs a task to the end
    and keeps it in PostgreSQL."""
    storage = MemoryStorage()
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"{i:03d}", "tags": []} for i in range(25)])
    store = PostgresTaskStore(pg_database)
    engine = TaskEngine(storage, task_store=store, batch_size=10)
    try:
        task = engine.create_task(edit_task(fieldKey="tags", operations={"addItems": ["x"]}))
        engine.run_until_idle()
        done = engine.get_task(task.id)
        assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 25)
        assert store.lease_of(task.id) is None  # released when the run ended
    finally:
        store.close()
    again = PostgresTaskStore(pg_database)
    try:
        assert again.get(task.id) == done
    finally:
        again.close()
    assert all(item["tags"] == ["x"] for item in storage.find("Items", "LIVE"))


def test_two_started_engines_on_one_database_run_each_task_once(pg_database: str) -> None:
    """Two engines, each with its own PostgresTaskStore on one database, and tasks created
    through either: each runs once, so every item gets every value exactly once."""
    storage = MemoryStorage()
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"{i:05d}", "tags": []} for i in range(200)])
    stores = [PostgresTaskStore(pg_database) for _ in range(2)]
    engines = [
        TaskEngine(storage, task_store=store, batch_size=10, workers=2, poll_interval=0.02)
        for store in stores
    ]
    for engine in engines:
        engine.start()
    try:
        created = [
            engines[n % 2].create_task(
                edit_task(fieldKey="tags", operations={"addItems": [f"v{n}"]})
            )
            for n in range(8)
        ]
        finished = [engines[0].wait(task.id, WAIT) for task in created]
    finally:
        for engine in engines:
            engine.stop()
        for store in stores:
            store.close()
    assert [task.status for task in finished] == [TaskStatus.COMPLETED] * 8
    assert [task.items_succeeded for task in finished] == [200] * 8
    expected = sorted(f"v{n}" for n in range(8))
    assert all(sorted(item["tags"]) == expected for item in storage.find("Items", "LIVE"))


def test_importing_taskengine_does_not_import_psycopg() -> None:
    """psycopg is imported on the first use of PostgresTaskStore, not by the package."""
    code = (
        "import sys, taskengine\n"
        "assert 'psycopg' not in sys.modules, 'imported early'\n"
        "taskengine.PostgresTaskStore\n"
        "assert 'psycopg' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=WAIT)
