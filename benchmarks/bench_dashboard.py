"""Dashboard benchmark: page weight, request rate, and checkpoint-to-page latency.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--quick]``. Needs the ``test``
extra (Playwright) and the Debian package ``chromium``. Prints:

* the page's weight (HTML + JS + CSS bytes) against the 50 KB budget;
* the requests the page sends while it lists 50 tasks, 5 of them running (advancing a
  batch at a time), counted by the server over a window, as requests per refresh interval
  (the baseline: one per interval is the target), then the same while the tab is hidden
  (the target: none);
* the time from a task's checkpoint (seen in the task store) to the page showing it,
  against the refresh interval plus 100 ms (the target: at most 1.0).

Never passes or fails on time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dashboard_site import GATED, serve_dashboard

from taskengine.dashboard import page_files

BUDGET = 50 * 1024
REFRESH_MS = 1000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COPY = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": GATED,
        "sourceFieldKey": "n",
        "targetFieldKey": "m",
    },
}
PLAIN = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Plain",
        "sourceFieldKey": "n",
        "targetFieldKey": "m",
    },
}


class Counter:
    """WSGI middleware counting the requests for data (not the page's own files)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if "/v1/" in str(environ.get("PATH_INFO", "")):
            with self.lock:
                self.count += 1
        return self.app(environ, start_response)


def weight() -> None:
    files = page_files()
    total = sum(len(data) for data in files.values())
    sizes = ", ".join(f"{name} {len(data):,}" for name, data in files.items())
    print(f"page weight: {total:,} bytes ({sizes}); {total / BUDGET:.2f}x the 50 KB budget")
    sys.stdout.flush()


def rate(browser: Any, window: float) -> None:
    counter: Counter | None = None

    def wrap(app: Any) -> Any:
        nonlocal counter
        counter = Counter(app)
        return counter

    with serve_dashboard(workers=5, batch_size=1, wrap=wrap) as site:
        finished = [site.engine.create_task(PLAIN) for _ in range(45)]
        for task in finished:
            site.engine.wait(task.id, 60)
        site.arm()
        for _ in range(5):
            site.engine.create_task(COPY)
        assert counter is not None
        page = browser.new_page()
        page.goto(f"{site.url}?refresh={REFRESH_MS}&pageSize=50")
        page.wait_for_function("() => document.querySelectorAll('#tasks tbody tr').length === 50")
        stop = threading.Event()

        def advance() -> None:  # the 5 running tasks go on, one item each per 0.5 s
            while not stop.wait(0.5):
                site.release(5)

        pusher = threading.Thread(target=advance, daemon=True)
        pusher.start()
        start_count, start = counter.count, time.perf_counter()
        time.sleep(window)
        sent, elapsed = counter.count - start_count, time.perf_counter() - start
        per_second = sent / elapsed
        print(
            f"50 tasks listed, 5 running: {sent} requests in {elapsed:.1f} s = "
            f"{per_second:.2f}/s at a {REFRESH_MS} ms refresh; "
            f"{per_second * REFRESH_MS / 1000:.2f} per refresh interval (target 1.00)"
        )
        page.evaluate(
            "() => { Object.defineProperty(document, 'hidden', {configurable: true, "
            "get: () => true}); document.dispatchEvent(new Event('visibilitychange')); }"
        )
        time.sleep(REFRESH_MS / 1000)  # a request in flight when hidden may still land
        start_count, start = counter.count, time.perf_counter()
        time.sleep(window / 2)
        hidden = counter.count - start_count
        print(f"tab hidden: {hidden} requests in {time.perf_counter() - start:.1f} s (target 0)")
        stop.set()
        pusher.join()
        page.close()


WATCH = """() => {
  window.__seen = [];
  const count = document.querySelector('#tasks tbody tr .count');
  new MutationObserver(() => window.__seen.push([count.textContent, Date.now()]))
    .observe(count, {childList: true, characterData: true, subtree: true});
}"""


def latency(browser: Any, samples: int) -> None:
    with serve_dashboard(workers=1, batch_size=1) as site:
        site.arm()
        task = site.engine.create_task(COPY)
        page = browser.new_page()
        page.goto(f"{site.url}?refresh={REFRESH_MS}")
        page.wait_for_function("() => document.querySelector('#tasks tbody tr .count')")
        page.evaluate(WATCH)
        shown: list[float] = []
        rng = random.Random(7)
        for done in range(1, samples + 1):
            time.sleep(rng.uniform(0, REFRESH_MS / 1000))  # a random phase of the refresh
            site.release(1)
            while True:  # the checkpoint: the task store has the batch
                current = site.engine.get_task(task.id)
                if current.items_succeeded + current.items_failed >= done:
                    checkpoint = time.time() * 1000
                    break
                time.sleep(0.0005)
            text = f"{done} / 30"
            page.wait_for_function(
                f"() => window.__seen.some(([t]) => t === {text!r})", polling=50, timeout=10_000
            )
            seen = page.evaluate(f"() => window.__seen.find(([t]) => t === {text!r})[1]")
            shown.append(seen - checkpoint)
        limit = REFRESH_MS + 100
        print(
            f"checkpoint to page over {samples} checkpoints at a {REFRESH_MS} ms refresh: "
            f"median {statistics.median(shown):.0f} ms, max {max(shown):.0f} ms; "
            f"max / (refresh + 100 ms) = {max(shown) / limit:.2f} (target <= 1.00)"
        )
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer samples")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    weight()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            rate(browser, 6.0 if args.quick else 20.0)
            latency(browser, 8 if args.quick else 25)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
