"""Filter benchmark: compiled filters (both dialects) vs hand-written Python predicates.

Run: ``.venv/bin/python benchmarks/bench_filters.py [--quick] [--only NAME]``

Filter shapes of the ``mongo`` and ``wix`` dialects over 100,000 seeded documents
(10,000 with ``--quick``). Dates are stored as the storages give them back: aware
``datetime`` objects in UTC. For each shape the compiled filter (called as
``filter(doc)``, the public way) and a hand-written function doing the same test on
these documents are timed in the same run, interleaved (best of 7 passes each, in CPU
time of the process); the
table shows documents per second and the ratio compiled/hand-written time (1.0 = as
fast as hand-written). The match counts must agree. Never fails on time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from taskengine.filters import compile_filter

Doc = dict[str, Any]
Pred = Callable[[Mapping[str, Any]], bool]

CITIES = [f"city{i}" for i in range(60)]
STATUSES = ["active", "inactive", "banned", "pending"]
TAGS = ["red", "green", "blue", "vip", "new", "old", "x", "y"]
NAMES = ["alice", "albert", "bob", "carol", "dave", "alfred", "eve", "mallory"]
EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def make_docs(n: int, seed: int = 42) -> list[Doc]:
    """``n`` seeded documents with scalars, a string array and an array of subdocs."""
    rnd = random.Random(seed)
    docs: list[Doc] = []
    for i in range(n):
        doc: Doc = {
            "_id": f"{i:08d}",
            "status": rnd.choice(STATUSES),
            "age": rnd.randrange(0, 100),
            "score": rnd.random() * 100,
            "city": rnd.choice(CITIES),
            "name": rnd.choice(NAMES) + str(rnd.randrange(1000)),
            "tags": rnd.sample(TAGS, rnd.randrange(0, 4)),
            "items": [
                {"sku": f"A{rnd.randrange(10)}", "qty": rnd.randrange(10)}
                for _ in range(rnd.randrange(0, 4))
            ],
            "created": EPOCH + timedelta(seconds=rnd.randrange(365 * 86400)),
            "address": {"city": rnd.choice(CITIES), "zip": f"{rnd.randrange(100000):05d}"},
        }
        if rnd.random() < 0.05:
            del doc["age"]
        if rnd.random() < 0.05:
            del doc["created"]
        docs.append(doc)
    return docs


IN20 = frozenset(CITIES[:20])
SOME = frozenset(["vip", "red"])
NOT_ACTIVE = frozenset(["banned", "pending", "inactive"])
D_LO = EPOCH + 100 * DAY
D_HI = EPOCH + 130 * DAY


def h_eq(d: Mapping[str, Any]) -> bool:
    return d.get("status") == "active"


def h_range(d: Mapping[str, Any]) -> bool:
    a = d.get("age")
    return a is not None and 18 <= a < 65


def h_in(d: Mapping[str, Any]) -> bool:
    return d.get("city") in IN20


def h_regex(d: Mapping[str, Any]) -> bool:
    n = d.get("name")
    return n is not None and n.startswith("al")


def h_member(d: Mapping[str, Any]) -> bool:
    return "vip" in d.get("tags", ())


def h_and3(d: Mapping[str, Any]) -> bool:
    a = d.get("age")
    return d.get("status") == "active" and a is not None and a >= 30 and "red" in d.get("tags", ())


def h_or3(d: Mapping[str, Any]) -> bool:
    a = d.get("age")
    return d.get("status") == "banned" or (a is not None and a < 20) or d.get("city") == "city7"


def h_or_same(d: Mapping[str, Any]) -> bool:
    return d.get("status") in NOT_ACTIVE


def h_elem(d: Mapping[str, Any]) -> bool:
    for e in d.get("items", ()):  # noqa: SIM110 (a loop is the fast hand-written form)
        if e.get("sku") == "A1" and e.get("qty", -1) >= 5:
            return True
    return False


def h_date_gt(d: Mapping[str, Any]) -> bool:
    c = d.get("created")
    return c is not None and c > D_HI


def h_date_lt(d: Mapping[str, Any]) -> bool:
    c = d.get("created")
    return c is not None and c < D_LO


def h_date_range(d: Mapping[str, Any]) -> bool:
    c = d.get("created")
    return c is not None and D_LO <= c < D_HI


def h_nested(d: Mapping[str, Any]) -> bool:
    return d["address"].get("city") == "city7"


def h_some(d: Mapping[str, Any]) -> bool:
    for t in d.get("tags", ()):  # noqa: SIM110
        if t in SOME:
            return True
    return False


def h_starts(d: Mapping[str, Any]) -> bool:
    n = d.get("name")
    return n is not None and n.casefold().startswith("al")


SHAPES: list[tuple[str, str, dict[str, Any], Pred]] = [
    ("mongo", "equality", {"status": "active"}, h_eq),
    ("mongo", "numeric range", {"age": {"$gte": 18, "$lt": 65}}, h_range),
    ("mongo", "$in of 20", {"city": {"$in": sorted(IN20)}}, h_in),
    ("mongo", "regex prefix", {"name": {"$regex": "^al"}}, h_regex),
    ("mongo", "array membership", {"tags": "vip"}, h_member),
    (
        "mongo",
        "$and of 3",
        {"$and": [{"status": "active"}, {"age": {"$gte": 30}}, {"tags": "red"}]},
        h_and3,
    ),
    (
        "mongo",
        "$or of 3",
        {"$or": [{"status": "banned"}, {"age": {"$lt": 20}}, {"city": "city7"}]},
        h_or3,
    ),
    (
        "mongo",
        "$or of 3 on one field",
        {"$or": [{"status": "banned"}, {"status": "pending"}, {"status": "inactive"}]},
        h_or_same,
    ),
    ("mongo", "$elemMatch", {"items": {"$elemMatch": {"sku": "A1", "qty": {"$gte": 5}}}}, h_elem),
    ("mongo", "date $gt", {"created": {"$gt": D_HI}}, h_date_gt),
    ("mongo", "date $lt", {"created": {"$lt": D_LO}}, h_date_lt),
    ("mongo", "date range", {"created": {"$gte": D_LO, "$lt": D_HI}}, h_date_range),
    ("mongo", "nested path", {"address.city": "city7"}, h_nested),
    ("mongo", "$in on an array", {"tags": {"$in": ["vip", "red"]}}, h_some),
    ("wix", "equality", {"status": "active"}, h_eq),
    ("wix", "numeric range", {"age": {"$gte": 18, "$lt": 65}}, h_range),
    ("wix", "$in of 20", {"city": {"$in": sorted(IN20)}}, h_in),
    ("wix", "$startsWith", {"name": {"$startsWith": "AL"}}, h_starts),
    ("wix", "$hasSome", {"tags": {"$hasSome": ["vip", "red"]}}, h_some),
    ("wix", "$and of 3", {"status": "active", "age": {"$gte": 30}, "tags": "red"}, h_and3),
    (
        "wix",
        "$or of 3",
        {"$or": [{"status": "banned"}, {"age": {"$lt": 20}}, {"city": "city7"}]},
        h_or3,
    ),
    ("wix", "date $gt", {"created": {"$gt": D_HI}}, h_date_gt),
    ("wix", "date range", {"created": {"$gte": D_LO, "$lt": D_HI}}, h_date_range),
    ("wix", "nested path", {"address.city": "city7"}, h_nested),
]


def run(pred: Pred, docs: list[Doc]) -> tuple[float, int]:
    """CPU seconds of this process for one pass, and the match count.

    CPU time, not wall time: this machine is shared, and a pass that waits for a core
    would count someone else's work.
    """
    start = time.process_time()
    n = 0
    for d in docs:
        if pred(d):
            n += 1
    return time.process_time() - start, n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k documents, 3 passes")
    parser.add_argument("--only", default="", help="only the shapes whose name holds this")
    args = parser.parse_args(argv)
    n_docs, passes = (10_000, 3) if args.quick else (100_000, 7)
    docs = make_docs(n_docs)
    rows = []
    ratios = []
    ok = True
    for dialect, name, spec, hand in SHAPES:
        if args.only not in f"{dialect} {name}":
            continue
        compiled = compile_filter(spec, dialect)  # type: ignore[arg-type]
        best_c = best_h = float("inf")
        count_c = count_h = 0
        for _ in range(passes):
            t, count_h = run(hand, docs)
            best_h = min(best_h, t)
            t, count_c = run(compiled, docs)
            best_c = min(best_c, t)
        if count_c != count_h:
            ok = False
        ratio = best_c / best_h
        ratios.append(ratio)
        rows.append((dialect, name, n_docs / best_c, n_docs / best_h, ratio, count_c, count_h))
    print(f"filter benchmark: {n_docs:,} documents, best of {passes} passes")
    print()
    print("| dialect | shape | compiled docs/s | hand-written docs/s | ratio | matches |")
    print("|---|---|---:|---:|---:|---:|")
    for dialect, name, c_rate, h_rate, ratio, count_c, count_h in rows:
        agree = f"{count_c:,}" if count_c == count_h else f"{count_c:,} != {count_h:,}"
        print(f"| {dialect} | {name} | {c_rate:,.0f} | {h_rate:,.0f} | {ratio:.2f} | {agree} |")
    print()
    if ratios:
        print(
            f"median ratio: {statistics.median(ratios):.2f}, "
            f"max ratio: {max(ratios):.2f} (target: max <= 1.5)"
        )
    if not ok:
        print("WARNING: match counts differ between compiled and hand-written predicates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
