"""Load benchmark: many concurrent clients against the HTTP app on waitress and on wsgiref.

Run: ``.venv/bin/python benchmarks/bench_load.py [--quick] [--clients N] [--rounds N]``.
Loopback only, and it stops by itself: each client thread keeps one keep-alive
``http.client`` connection (reopened when the server closes it) and does ``--rounds``
rounds of create, poll the task three times, read the progress view, cancel; every tenth
round also lists tasks. The server runs in its own process over a fresh SQLite file (200
items), first ``taskengine serve`` itself (waitress, default settings), then the same app
over the same kind of engine on the bare standard-library server
(:func:`~taskengine.http.make_server`).

Prints, per server: errors (exceptions and non-2xx), requests/s, and p50/p99/max latency of
GETs and of POSTs; then the throughput ratio. Targets for waitress: 0 errors and GET p99
<= 1 s at 200 clients. Never passes or fails on wall-clock time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskengine.http import make_app, make_server
from taskengine.storage.sqlite import SQLiteStorage

TASK = json.dumps(
    {
        "task": {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "Items",
                "sourceFieldKey": "name",
                "targetFieldKey": "nameCopy",
            },
        }
    }
)
TIMEOUT = 60.0


@contextmanager
def _server(command: list[str]) -> Iterator[int]:
    """Start a server process, yield its port once it listens, stop it with SIGINT."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "http://" in line:
                port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError(f"{command[0]} exited without serving")
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _serve_bare(db: str) -> None:
    """Serve ``db`` like ``taskengine serve`` does, but on the bare wsgiref server."""
    from taskengine.cli import open_engine

    with open_engine(db, workers=2) as (engine, _storage):
        engine.start()
        server = make_server(make_app(engine), "127.0.0.1", 0, quiet=True)
        print(f"Serving on http://127.0.0.1:{server.server_port}/cms/v1/tasks", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


class _Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {"GET": [], "POST": [], "DELETE": []}
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def _client(port: int, rounds: int, start: threading.Barrier, results: _Results) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    mine: dict[str, list[float]] = {"GET": [], "POST": [], "DELETE": []}

    def call(method: str, path: str, body: str | None = None) -> Any:
        began = time.perf_counter()
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            data = response.read()
        except Exception as exc:
            conn.close()  # the next request opens a new connection
            results.error(type(exc).__name__)
            return None
        mine[method].append(time.perf_counter() - began)
        if response.status >= 300:
            results.error(f"HTTP {response.status}")
            return None
        return json.loads(data)

    try:
        start.wait()
        for number in range(rounds):
            created = call("POST", "/cms/v1/tasks", TASK)
            if created is None:
                continue
            task_id = created["task"]["id"]
            for _ in range(3):
                call("GET", f"/cms/v1/tasks/{task_id}")
            call("GET", f"/api/backgroundtask/{task_id}")
            call("DELETE", f"/cms/v1/tasks/{task_id}")
            if number % 10 == 0:
                call("GET", "/cms/v1/tasks?paging.limit=10")
    finally:
        conn.close()
        with results.lock:
            for method, values in mine.items():
                results.latencies[method].extend(values)


def _run(command: list[str], clients: int, rounds: int) -> dict[str, Any]:
    results = _Results()
    start = threading.Barrier(clients + 1)
    with _server(command) as port:
        threads = [
            threading.Thread(target=_client, args=(port, rounds, start, results), daemon=True)
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    answered = sum(len(values) for values in results.latencies.values())
    return {
        "errors": sum(results.errors.values()),
        "error_kinds": dict(results.errors),
        "requests": answered,
        "rate": answered / elapsed,
        "seconds": elapsed,
        "get": _percentiles(results.latencies["GET"]),
        "post": _percentiles(results.latencies["POST"]),
    }


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return at(0.50), at(0.99), ordered[-1]


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="50 clients, 2 rounds")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="waitress threads (default: serve's)")
    parser.add_argument("--serve-bare", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    clients, rounds = (50, 2) if args.quick else (args.clients, args.rounds)

    if args.serve_bare:
        _serve_bare(args.serve_bare)
        return
    taskengine = str(Path(sys.executable).with_name("taskengine"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        servers = {
            "waitress (taskengine serve)": [
                taskengine,
                "serve",
                "--db",
                "{db}",
                "--port",
                "0",
                "--quiet",
                *(["--threads", str(args.threads)] if args.threads else []),
            ],
            "bare wsgiref": [sys.executable, __file__, "--serve-bare", "{db}"],
        }
        for number, (name, command) in enumerate(servers.items()):
            db = os.path.join(folder, f"load{number}.db")
            with SQLiteStorage(db) as storage:
                storage.create_collection("Items")
                storage.insert_items(
                    "Items", "LIVE", [{"_id": f"i{n:04d}", "name": n} for n in range(200)]
                )
            argv = [part.replace("{db}", db) for part in command]
            rows.append((name, _run(argv, clients, rounds)))

    print(f"{clients} clients x {rounds} rounds (create, 3 polls, progress, cancel)\n")
    print(
        "| server | requests | errors | req/s | GET p50 ms | GET p99 ms | GET max ms "
        "| POST p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows:
        get50, get99, getmax = (1000 * v for v in row["get"])
        post99 = 1000 * row["post"][1]
        print(
            f"| {name} | {row['requests']:,} | {row['errors']:,} | {row['rate']:,.0f} "
            f"| {get50:,.1f} | {get99:,.1f} | {getmax:,.1f} | {post99:,.1f} |"
        )
    for name, row in rows:
        if row["error_kinds"]:
            print(f"\n{name} errors: {row['error_kinds']}")
    ratio = rows[0][1]["rate"] / rows[1][1]["rate"]
    print(f"\nthroughput, waitress / bare wsgiref: {ratio:.2f}x")
    waitress_row = rows[0][1]
    met = waitress_row["errors"] == 0 and waitress_row["get"][1] <= 1.0
    print(f"waitress target (0 errors, GET p99 <= 1 s): {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
