"""Surfaces benchmark: the tolerant JSON parser and the HTTP app against their baselines.

Run: ``.venv/bin/python benchmarks/bench_surfaces.py [--quick]``. Prints documents/s (or
requests/s) and the ratio against a hand-written baseline measured in the same run:
``json.loads`` for the parser, a bare WSGI app answering a fixed JSON body for HTTP.
Never passes or fails on time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from taskengine._jsonio import parse_json
from taskengine.engine import TaskEngine
from taskengine.http import make_app, make_server
from taskengine.storage.memory import MemoryStorage

SEED = (
    '{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": { "dataCollectionId": '
    '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, } } }'
)


def _rate(fn: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return repeat / (time.perf_counter() - start)


def _serve(app: Any) -> tuple[Any, threading.Thread]:
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    finally:
        conn.close()


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 1 if args.quick else 5
    rows: list[tuple[str, float, float]] = []

    strict = SEED.replace("}, }", "} }")
    rows.append(
        (
            "parse seed body (docs/s)",
            _rate(lambda: parse_json(SEED), 20000 * scale),
            _rate(lambda: json.loads(strict), 20000 * scale),
        )
    )
    big = json.dumps([{"_id": str(n), "tags": ["a", "b"], "n": n} for n in range(20000)])
    rows.append(
        (
            "parse 1 MB array (docs/s)",
            _rate(lambda: parse_json(big), 5 * scale),
            _rate(lambda: json.loads(big), 5 * scale),
        )
    )

    storage = MemoryStorage()
    storage.create_collection("Empty")
    engine = TaskEngine(storage)
    task = engine.create_task(
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Empty"}}
    )
    engine.run_until_idle()
    body = json.dumps({"task": engine.get_task(task.id).to_json()}).encode()

    def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    ours, ours_thread = _serve(make_app(engine))
    base, base_thread = _serve(bare)
    try:
        n = 300 * scale
        rows.append(
            (
                "GET /cms/v1/tasks/{id} (req/s)",
                _rate(lambda: _get(ours.server_port, f"/cms/v1/tasks/{task.id}"), n),
                _rate(lambda: _get(base.server_port, "/"), n),
            )
        )
    finally:
        for server, thread in ((ours, ours_thread), (base, base_thread)):
            server.shutdown()
            server.server_close()
            thread.join()

    print(f"{'case':<34} {'taskengine':>12} {'baseline':>12} {'ratio':>7}")
    for name, mine, baseline in rows:
        print(f"{name:<34} {mine:>12,.0f} {baseline:>12,.0f} {baseline / mine:>6.2f}x")


if __name__ == "__main__":
    main()
