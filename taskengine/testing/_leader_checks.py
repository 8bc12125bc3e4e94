"""Task-store conformance checks: leader leases (``lead``, ``resign``, ``leader_of``)."""

from __future__ import annotations

import threading
from datetime import timedelta

import attrs

from taskengine.clock import ManualClock
from taskengine.taskstore import Lease, TaskStore
from taskengine.testing._checks import expect, expect_raises
from taskengine.testing._taskstore_checks import LEASE, claim, register, stored

ROLE = "publish-scheduler"
_MS = timedelta(milliseconds=1)


def _lead(store: TaskStore, role: str, owner: str, clock: ManualClock) -> Lease:
    lease = store.lead(role, owner, clock.now(), LEASE)
    expect(lease is not None, f"lead({role!r}, {owner!r}) of a role nobody leads returned None")
    assert lease is not None
    return lease


@register
def check_lead_grants_leadership(store: TaskStore, clock: ManualClock) -> None:
    """A first lead returns token 1, the owner and now + duration; leader_of returns it."""
    expect(store.leader_of(ROLE) is None, "a role never led has a leader")
    lease = _lead(store, ROLE, "a", clock)
    expect(
        lease == Lease(ROLE, "a", 1, clock.now() + LEASE),
        f"lead returned {lease!r}, expected token 1 until now + duration",
    )
    expect(lease.expires_at.utcoffset() == timedelta(0), "expires_at is not aware UTC")
    expect(store.leader_of(ROLE) == lease, f"leader_of returned {store.leader_of(ROLE)!r}")
    expect(store.leader_of("another-role") is None, "a role never led has a leader")


@register
def check_one_live_leader(store: TaskStore, clock: ManualClock) -> None:
    """While a leadership is live, every other owner's lead returns None and changes nothing."""
    lease = _lead(store, ROLE, "a", clock)
    clock.set(lease.expires_at - _MS)
    for owner in ("b", "c"):
        got = store.lead(ROLE, owner, clock.now(), LEASE)
        expect(got is None, f"{owner!r} led a role under a live leadership: {got!r}")
    expect(store.leader_of(ROLE) == lease, "a refused lead changed the leadership")


@register
def check_expired_leadership_hands_over(store: TaskStore, clock: ManualClock) -> None:
    """At expires_at anyone may lead, with the next token; also the owner whose term ended."""
    first = _lead(store, ROLE, "a", clock)
    clock.set(first.expires_at)
    expect(store.leader_of(ROLE) == first, "leader_of does not show an expired leadership")
    second = _lead(store, ROLE, "b", clock)
    expect(second.token == 2, f"the lead after expiry has token {second.token}, expected 2")
    expect(store.lead(ROLE, "a", clock.now(), LEASE) is None, "the expired leader took it back")
    clock.set(second.expires_at)
    third = _lead(store, ROLE, "b", clock)
    expect(third.token == 3, f"the same owner's lead after expiry has token {third.token}")
    expect(store.leader_of(ROLE) == third, f"leader_of returned {store.leader_of(ROLE)!r}")


@register
def check_same_owner_renews(store: TaskStore, clock: ManualClock) -> None:
    """The live leader's lead renews its term: same token, ends at now + duration."""
    lease = _lead(store, ROLE, "a", clock)
    clock.set(lease.expires_at - _MS)
    renewed = _lead(store, ROLE, "a", clock)
    expect(
        renewed == attrs.evolve(lease, expires_at=clock.now() + LEASE),
        f"a renewing lead returned {renewed!r}",
    )
    expect(store.leader_of(ROLE) == renewed, "leader_of does not show the renewal")
    clock.set(lease.expires_at)
    expect(store.lead(ROLE, "b", clock.now(), LEASE) is None, "a renewed leadership was taken")
    clock.set(renewed.expires_at)
    expect(_lead(store, ROLE, "b", clock).token == 2, "a renewal changed the token")


@register
def check_resign_frees_the_role_at_once(store: TaskStore, clock: ManualClock) -> None:
    """After resign another owner leads at once with the next token; stale resigns are ignored."""
    store.resign(Lease(ROLE, "a", 1, clock.now() + LEASE))  # never led: a no-op
    expect(store.leader_of(ROLE) is None, "resigning a role never led made a leader")
    lease = _lead(store, ROLE, "a", clock)
    store.resign(lease)
    expect(store.leader_of(ROLE) is None, "leader_of shows a resigned leadership")
    newer = _lead(store, ROLE, "b", clock)
    expect(newer.token == 2, f"the lead after resign has token {newer.token}")
    store.resign(lease)  # stale: must neither raise nor free the role
    store.resign(attrs.evolve(newer, owner="a"))
    store.resign(attrs.evolve(newer, token=1))
    expect(store.leader_of(ROLE) == newer, "a stale resign changed the leadership")
    expect(store.lead(ROLE, "c", clock.now(), LEASE) is None, "a stale resign freed the role")
    clock.set(newer.expires_at)
    store.resign(newer)  # expired but still the current term: resigns
    expect(store.leader_of(ROLE) is None, "an expired leader's resign was ignored")
    expect(_lead(store, ROLE, "c", clock).token == 3, "resigning reset the role's token")


@register
def check_roles_and_tasks_are_separate(store: TaskStore, clock: ManualClock) -> None:
    """Roles are independent of each other and of tasks, even a task of the same name."""
    (task,) = stored(store, clock)
    held = claim(store, task.id, "a", clock)
    led = _lead(store, task.id, "b", clock)
    expect(led.token == 1, f"the first lead of a role named like a task has token {led.token}")
    expect(_lead(store, ROLE, "c", clock).token == 1, "a second role's first token is not 1")
    expect(store.lease_of(task.id) == held, "leading a role changed a task's lease")
    expect(store.leader_of(task.id) == led, "claiming a task changed a role's leadership")
    store.release(held)
    expect(store.leader_of(task.id) == led, "releasing a task freed the role of its name")
    store.resign(led)
    expect(store.lease_of(task.id) is None, "resigning a role changed a task's lease")
    expect(claim(store, task.id, "a", clock).token == 2, "a task's token moved with a role's")
    expect(store.leader_of(ROLE) is not None, "resigning one role freed another")


@register
def check_lead_bad_arguments(store: TaskStore, clock: ManualClock) -> None:
    """A non-positive duration, an empty owner or an empty role is a ValueError; none leads."""
    now = clock.now()

    def refused(what: str, role: str, owner: str, duration: timedelta) -> None:
        expect_raises(ValueError, what, lambda: store.lead(role, owner, now, duration))

    refused("lead for 0 s", ROLE, "a", timedelta(0))
    refused("lead for -30 s", ROLE, "a", -LEASE)
    refused("lead by ''", ROLE, "", LEASE)
    refused("lead of role ''", "", "a", LEASE)
    expect(store.leader_of(ROLE) is None, "a refused lead left a leader")
    lease = _lead(store, ROLE, "a", clock)
    refused("a renewing lead for 0 s", ROLE, "a", timedelta(0))
    expect(store.leader_of(ROLE) == lease, "a refused renewal changed the leadership")


@register
def check_concurrent_leads_have_one_winner(store: TaskStore, clock: ManualClock) -> None:
    """Eight threads leading the same roles at once: each role goes to exactly one."""
    roles = [f"role-{n}" for n in range(5)]
    now = clock.now()
    won: list[Lease] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def race(owner: str) -> None:
        try:
            barrier.wait(timeout=30)
            for role in roles:
                lease = store.lead(role, owner, now, LEASE)
                if lease is not None:
                    with lock:
                        won.append(lease)
        except BaseException as exc:  # reported below, in the checking thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(f"owner-{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expect(not errors, f"a leading thread failed: {errors!r}")
    expect(
        sorted(lease.task_id for lease in won) == roles,
        f"roles led by several threads at once: {sorted(won, key=lambda lease: lease.task_id)}",
    )
    expect(all(lease.token == 1 for lease in won), "a racing lead got a token other than 1")
    for lease in won:
        expect(store.leader_of(lease.task_id) == lease, f"leader_of does not show {lease!r}")
