"""Processes sharing one SQLite task store file: claims, updates and leads race across
processes, and each compare-and-set or read-change-write still happens exactly once.

Every race starts four processes that open the file and say ``ready``; once all have,
they are told to go at once. Every wait is bounded by one deadline (no sleeps).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from taskengine.task import RawOptions, Task
from taskengine.taskstore import SQLiteTaskStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RACERS = 4


def make_task(task_id: str) -> Task:
    """A NEW task with raw options (what the SQLite store reads back)."""
    return Task(
        id=task_id,
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0,
    )


def race(script: str, path: Path, *args: object, timeout: float = 120.0) -> list[Any]:
    """Run ``script`` in :data:`RACERS` processes (``argv``: the file, the racer's number,
    then ``args``), started together once every one has printed ``ready``; each one's last
    output line, parsed as JSON, in racer order."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(path), str(k), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(RACERS)
    ]
    try:
        deadline = time.monotonic() + timeout
        for child in children:  # every child has opened the file
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
            assert ready, "a racing process never said it was ready"
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # then all of them start at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert child.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return reports


CLAIMER = """
    import json, random, sys
    from datetime import datetime, timedelta, timezone
    from taskengine.taskstore import SQLiteTaskStore

    path, k = sys.argv[1], int(sys.argv[2])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lease = timedelta(seconds=60)
    store = SQLiteTaskStore(path)
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


def test_processes_racing_to_claim_never_share_a_token(tmp_path: Path) -> None:
    """Four processes claim 40 tasks on one file, twice (the second round after expiry):
    each (task, token) is won by exactly one process, and tokens go 1 then 2."""
    path = tmp_path / "tasks.db"
    store = SQLiteTaskStore(path)
    ids = [f"task-{n:03d}" for n in range(40)]
    for task_id in ids:
        store.insert(make_task(task_id))
    store.close()
    reports = race(CLAIMER, path)
    assert [report["listed"] for report in reports] == [40] * RACERS
    winners: dict[tuple[str, int], list[int]] = {}
    for k, report in enumerate(reports):
        for task_id, token in report["claims"]:
            winners.setdefault((task_id, token), []).append(k)
    assert sorted(winners) == sorted((task_id, token) for task_id in ids for token in (1, 2))
    assert all(len(procs) == 1 for procs in winners.values()), winners
    store = SQLiteTaskStore(path)
    try:
        for task_id in ids:
            lease = store.lease_of(task_id)
            assert lease is not None
            assert (lease.owner, lease.token) == (f"proc-{winners[(task_id, 2)][0]}", 2)
    finally:
        store.close()


UPDATER = """
    import json, sys
    import attrs
    from taskengine.taskstore import SQLiteTaskStore

    path = sys.argv[1]
    store = SQLiteTaskStore(path)
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


def test_processes_updating_one_task_lose_nothing(tmp_path: Path) -> None:
    """Four processes each add one to a task's counter 100 times: it ends at 400, and every
    update saw a value no other update saw."""
    path = tmp_path / "tasks.db"
    store = SQLiteTaskStore(path)
    store.insert(make_task("counter"))
    store.close()
    reports = race(UPDATER, path)
    for seen in reports:
        assert seen == sorted(seen)
    assert sorted(value for seen in reports for value in seen) == list(range(1, 401))
    store = SQLiteTaskStore(path)
    try:
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
    from taskengine.taskstore import SQLiteTaskStore

    path, k, rounds, roles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    term = timedelta(seconds=60)
    store = SQLiteTaskStore(path)
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


def test_processes_racing_to_lead_have_one_winner_per_round(tmp_path: Path) -> None:
    """Four processes lead four roles on one file for 30 rounds, each after the last
    term ended: each (role, round) has exactly one winner, whose token is the round's
    number + 1; a winner's renewal keeps its token."""
    path = tmp_path / "tasks.db"
    SQLiteTaskStore(path).close()
    reports = race(LEADER, path, ROUNDS, *ROLES)
    winners: dict[tuple[str, int], list[tuple[int, int]]] = {}
    tokens: dict[tuple[str, int, int], int] = {}
    for k, report in enumerate(reports):
        for role, round_, token in report["won"]:
            winners.setdefault((role, round_), []).append((k, token))
            tokens[(k, role, round_)] = token
    assert sorted(winners) == sorted((role, r) for role in ROLES for r in range(ROUNDS))
    assert all(len(won) == 1 for won in winners.values()), winners
    assert all(won[0][1] == key[1] + 1 for key, won in winners.items()), winners
    for k, report in enumerate(reports):
        for role, round_, token in report["renewed"]:
            assert tokens[(k, role, round_)] == token
    store = SQLiteTaskStore(path)
    try:
        for role in ROLES:
            lease = store.leader_of(role)
            assert lease is not None
            ((k, token),) = winners[(role, ROUNDS - 1)]
            assert (lease.owner, lease.token) == (f"proc-{k}", ROUNDS)
    finally:
        store.close()
