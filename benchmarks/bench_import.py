"""Import benchmark: peak memory (RSS) and time of ``taskengine import`` for two file sizes.

Run: ``.venv/bin/python benchmarks/bench_import.py [--quick] [--pythonpath DIR]``. Writes
seeded JSON Lines files of 200,000 and 1,000,000 items (``--quick``: 20,000 and 100,000)
and imports each into a new SQLite file in a child process, whose peak RSS is read from
``getrusage(RUSAGE_CHILDREN)``. The baseline is the peak RSS of a child that only imports
``taskengine.cli`` (interpreter + modules), measured in the same run. ``--pythonpath``
runs another checkout of taskengine (to compare with an older version).
Never passes or fails on time or memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile


def _write(path: str, lines: int, seed: int = 10) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for n in range(lines):
            item = {
                "_id": f"item-{n:08d}",
                "title": f"Product {n}",
                "price": round(rng.uniform(1, 500), 2),
                "tags": rng.sample(["red", "blue", "sale", "new", "eco"], 2),
            }
            handle.write(json.dumps(item) + "\n")


def _child(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, float]:
    """Peak RSS (bytes) and seconds of one child process running ``argv``."""
    code = (
        "import resource, subprocess, sys\n"
        "started = __import__('time').monotonic()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "took = __import__('time').monotonic() - started\n"
        "assert done.returncode == 0, done.stderr\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, took)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,  # not a checkout: ``-m`` puts the working directory before PYTHONPATH
        check=True,
    ).stdout.split()
    return int(out[0]) * 1024, float(out[1])  # ru_maxrss is in KiB on Linux


def main() -> None:
    """Print peak RSS and time per file size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pythonpath", help="import taskengine from this directory")
    args = parser.parse_args()
    sizes = (20_000, 100_000) if args.quick else (200_000, 1_000_000)
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    with tempfile.TemporaryDirectory() as folder:
        baseline, _ = _child([sys.executable, "-c", "import taskengine.cli"], env, folder)
        print(f"baseline (interpreter + taskengine.cli): {baseline / 2**20:.1f} MB RSS")
        print("| lines | file MB | peak RSS MB | over baseline MB | seconds | lines/s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for lines in sizes:
            source = os.path.join(folder, f"{lines}.jsonl")
            _write(source, lines)
            db = os.path.join(folder, f"{lines}.db")
            argv = [sys.executable, "-m", "taskengine", "import", "--db", db]
            rss, took = _child([*argv, "--collection", "Items", source], env, folder)
            size = os.path.getsize(source) / 2**20
            print(
                f"| {lines:,} | {size:.0f} | {rss / 2**20:.1f} | {(rss - baseline) / 2**20:.1f} "
                f"| {took:.1f} | {lines / took:,.0f} |"
            )


if __name__ == "__main__":
    main()
