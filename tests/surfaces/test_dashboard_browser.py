"""The dashboard in a real browser: Playwright driving the system's headless Chromium.

Tasks over the ``Gated`` collection advance one batch per permit the test releases
(tests/dashboard_site.py), so every step is decided by what the page shows, through
Playwright's waiting ``expect``, never by sleeping. Screenshots go to
``$TASKENGINE_SCREENSHOTS`` (``docs/images`` refreshes the committed set) or a temporary
folder.

Needs the Python package ``playwright`` (the ``test`` extra) and the Debian package
``chromium`` (``apt-get install chromium``; Playwright's own browser download is not
used). Without them these tests skip, unless ``TASKENGINE_REQUIRE_BROWSER=1`` (CI), where
they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_site import GATED, MARKUP_ID, SCRIPT_VALUE, Site, serve_dashboard

from taskengine.cli._owners import owner_label

CHROMIUM = os.environ.get("TASKENGINE_CHROMIUM", "/usr/bin/chromium")
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
REFRESH = "?refresh=200"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed: pip install -e '.[test]'"
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return (
            f"no Chromium at {CHROMIUM}: install the Debian package chromium "
            "(apt-get install chromium)"
        )
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("TASKENGINE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TASKENGINE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage); fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 760}, reduced_motion="reduce")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], errors


@pytest.fixture
def site() -> Iterator[Site]:
    """A started engine and the dashboard on a free port (no token)."""
    with serve_dashboard() as served:
        yield served


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    chosen = os.environ.get("TASKENGINE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("dashboard-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def copy_task(collection: str = GATED) -> dict[str, Any]:
    return {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": collection,
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    }


def failing_edit_task() -> dict[str, Any]:
    """Edits ``Items``: the two items whose ``tags`` is a string fail (one has a markup id)."""
    return {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "filter": {"title": {"$ne": '<img src=x onerror="window.__pwned=3">'}},
            "fieldKey": "tags",
            "operations": {"addItems": [SCRIPT_VALUE]},
        },
    }


def row(page: Any, task_id: str) -> Any:
    return page.locator(f'tr[data-id="{task_id}"]')


def test_list_follows_a_running_task_to_completed(site: Site, page: Any) -> None:
    """The row advances batch by batch as the test lets batches through, shows the owner
    while the task runs, and keeps its size while the progress changes."""
    from playwright.sync_api import expect

    site.arm()
    task = site.engine.create_task(copy_task())
    page.goto(site.url + REFRESH)
    shown = row(page, task.id)
    expect(shown.locator(".status")).to_have_text("RUNNING")
    expect(shown.locator(".count")).to_have_text("0 / 30")
    expect(shown.locator("td").nth(8)).to_have_text(owner_label(site.engine.owner))
    before = (shown.bounding_box(), shown.locator(".bar").bounding_box())
    site.release(1)
    expect(shown.locator(".count")).to_have_text("10 / 30")
    assert (shown.bounding_box(), shown.locator(".bar").bounding_box()) == before
    site.release(1)
    expect(shown.locator(".count")).to_have_text("20 / 30")
    expect(shown.locator(".bar")).to_have_attribute("aria-valuenow", "20")
    site.release(5)
    expect(shown.locator(".status")).to_have_text("COMPLETED")
    expect(shown.locator(".count")).to_have_text("30 / 30")
    expect(shown.locator("td").nth(5)).to_have_text("30 / 0")
    expect(shown.locator("td").nth(8)).to_have_text("—")
    expect(shown.get_by_role("button", name=re.compile("Cancel"))).to_be_hidden()


def test_cancel_from_the_list_and_the_detail(site: Site, page: Any) -> None:
    """A RUNNING task shows "cancel requested" until its batch ends, then FAILED/cancelled;
    the list's button works from the keyboard."""
    from playwright.sync_api import expect

    site.arm()
    first = site.engine.create_task(copy_task())
    second = site.engine.create_task(copy_task())
    page.goto(site.url + REFRESH)
    expect(row(page, first.id).locator(".status")).to_have_text("RUNNING")
    expect(row(page, second.id).locator(".status")).to_have_text("RUNNING")
    button = page.get_by_role("button", name=f"Cancel task {first.id}")
    button.focus()
    page.keyboard.press("Enter")
    expect(row(page, first.id).locator(".status")).to_have_text("RUNNING · cancel requested")
    expect(button).to_be_hidden()
    assert site.engine.get_task(first.id).cancel_requested

    page.goto(site.url + REFRESH + f"#/task/{second.id}")
    expect(page.locator("#d-status")).to_have_text("RUNNING")
    expect(page.locator("#d-owner")).to_have_text(owner_label(site.engine.owner))
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("#d-status")).to_have_text("RUNNING · cancel requested")
    site.release(10)
    expect(page.locator("#d-status")).to_have_text("FAILED · cancelled")
    expect(page.locator("#d-failures tbody td").first).to_have_text("CANCELLED")
    expect(page.locator("#d-owner")).to_have_text("—")
    expect(page.locator("#d-times")).to_contain_text("Expires")

    page.get_by_role("link", name="All tasks").click()
    expect(row(page, first.id).locator(".status")).to_have_text("FAILED · cancelled")
    expect(row(page, second.id).locator(".status")).to_have_text("FAILED · cancelled")


def test_the_form_shows_server_errors_by_field_then_creates(
    site: Site, page: Any, shots: Path
) -> None:
    """A refused task shows each violation next to its field and creates nothing; the
    filter gets a JSON syntax check; a valid one is created and opens its detail."""
    from playwright.sync_api import expect

    page.goto(site.url + "#/new")
    expect(page.locator("#f-collection option")).to_have_count(3)
    page.get_by_label("Type", exact=True).select_option("COPY_FIELD_DATA")
    page.get_by_label("Collection", exact=True).select_option("Plain")
    page.get_by_label("Target field", exact=True).fill("_id")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#e-source")).to_have_text("required")
    expect(page.locator("#e-target")).to_have_text("must not be the system field '_id'")
    expect(page.get_by_label("Target field", exact=True)).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=str(shots / "dashboard-form-errors.png"), full_page=True)
    assert site.engine.list_tasks().total == 0

    page.get_by_label("Type", exact=True).select_option("EDIT_FIELD_DATA")
    page.get_by_label("Filter (JSON)", exact=True).fill('{"n": ')
    expect(page.locator("#e-filter")).to_contain_text("not valid JSON")
    page.get_by_label("Filter (JSON)", exact=True).fill('{"n": {"$foo": 1}}')
    expect(page.locator("#e-filter")).to_have_text("unknown operator: $foo")
    expect(page.locator("#e-fieldkey")).to_have_text("required")
    assert site.engine.list_tasks().total == 0

    page.get_by_label("Type", exact=True).select_option("COPY_FIELD_DATA")
    page.get_by_label("Source field", exact=True).fill("n")
    page.get_by_label("Target field", exact=True).fill("m")
    expect(page.locator("#form-state")).to_have_text("Valid.")
    page.get_by_role("button", name="Create task").click()
    expect(page).to_have_url(re.compile("#/task/"))
    expect(page.locator("#d-status")).to_have_text("COMPLETED")
    (created,) = site.engine.list_tasks().tasks
    assert created.options.to_json()["dataCollectionId"] == "Plain"
    expect(page.locator("#d-id")).to_have_text(created.id)


def test_the_raw_json_mode(site: Site, page: Any) -> None:
    """Raw mode starts from the form's task, lists violations by path, and creates."""
    from playwright.sync_api import expect

    page.goto(site.url + "#/new")
    expect(page.locator("#f-collection option")).to_have_count(3)
    page.get_by_label("Raw JSON", exact=True).check()
    editor = page.get_by_label("Task JSON to create", exact=True)
    assert json.loads(editor.input_value())["task"]["type"] == "DELETE_BY_QUERY"
    bad = copy_task("Plain")
    bad["copyFieldDataOptions"]["targetFieldKey"] = "n"
    editor.fill(json.dumps({"task": bad}))
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#e-raw")).to_contain_text("copyFieldDataOptions")
    assert site.engine.list_tasks().total == 0
    editor.fill(json.dumps({"task": copy_task("Plain")}))
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#d-status")).to_have_text("COMPLETED")
    assert site.engine.list_tasks().total == 1


def test_the_token_flow(browser: Any) -> None:
    """With a token, no data without it: the page asks, refuses a wrong one, keeps the
    right one for the tab only, and forgets it on request."""
    from playwright.sync_api import expect

    with serve_dashboard(token="s3cret") as site:
        task = site.engine.create_task(copy_task("Plain"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(site.url + "dashboard/v1/tasks", timeout=10)
        assert refused.value.code == 401
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(site.url)
            expect(page.get_by_label("API token", exact=True)).to_be_visible()
            expect(page.locator("#view-list")).to_be_hidden()
            page.get_by_label("API token", exact=True).fill("wrong")
            page.keyboard.press("Enter")
            expect(page.locator("#login-error")).to_have_text("That token was refused.")
            page.get_by_label("API token", exact=True).fill("s3cret")
            page.get_by_role("button", name="Sign in").click()
            expect(row(page, task.id)).to_be_visible()
            stored = page.evaluate(
                "[sessionStorage.getItem('taskengine.token'), localStorage.length]"
            )
            assert stored == ["s3cret", 0]
            other = context.new_page()  # another tab: sessionStorage is per tab
            other.goto(site.url)
            expect(other.get_by_label("API token", exact=True)).to_be_visible()
            page.get_by_role("button", name="Forget token").click()
            expect(page.get_by_label("API token", exact=True)).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            context.close()


def test_markup_in_the_data_is_shown_as_text(site: Site, page: Any) -> None:
    """Item ids, values and filter values holding markup and script show as text."""
    from playwright.sync_api import expect

    task = site.engine.create_task(failing_edit_task())
    assert site.engine.wait(task.id, 30).is_finished
    page.goto(site.url + f"#/task/{task.id}")
    expect(page.locator("#d-status")).to_have_text("COMPLETED · with failures")
    items = page.locator("#d-failures tbody td:nth-child(3)")
    expect(items).to_have_count(2)
    assert sorted(items.all_text_contents()) == sorted([MARKUP_ID, "<b>bold</b>"])
    expect(page.locator("#d-options")).to_contain_text("window.__pwned=3")
    expect(page.locator("#d-options")).to_contain_text(SCRIPT_VALUE)
    assert page.locator("main img, main script, main b").count() == 0
    assert page.evaluate("window.__pwned === undefined")
    page.get_by_role("link", name="All tasks").click()
    expect(row(page, task.id).locator(".status")).to_have_text("COMPLETED · with failures")
    page.get_by_role("link", name="Collections").click()
    expect(page.locator("#collections tbody tr")).to_have_count(3)
    expect(page.locator("#collections tbody tr").nth(1)).to_have_text(
        re.compile("Items\\s*10\\s*2\\s*yes\\s*yes")
    )


def test_screenshots_and_narrow_width(site: Site, page: Any, shots: Path) -> None:
    """The list with a running, a completed, a cancelled and a partly failed task; the
    detail; and the list at phone width, readable without sideways scrolling."""
    from playwright.sync_api import expect

    done = site.engine.create_task(copy_task("Plain"))
    failed = site.engine.create_task(failing_edit_task())
    assert site.engine.wait(done.id, 30).is_finished
    assert site.engine.wait(failed.id, 30).is_finished
    site.arm()
    cancelled = site.engine.create_task(copy_task())
    site.engine.cancel_task(cancelled.id)
    site.release(1)  # its batch, if a worker had started it before the cancel
    assert site.engine.wait(cancelled.id, 30).is_finished
    running = site.engine.create_task(copy_task())
    site.release(1)  # one batch (two if the cancelled task never started)
    page.goto(site.url + REFRESH)
    expect(row(page, cancelled.id).locator(".status")).to_have_text("FAILED · cancelled")
    expect(row(page, running.id).locator(".count")).to_have_text(re.compile("^[12]0 / 30$"))
    expect(row(page, failed.id).locator(".status")).to_have_text("COMPLETED · with failures")
    expect(row(page, done.id).locator(".status")).to_have_text("COMPLETED")
    page.screenshot(path=str(shots / "dashboard-list.png"))
    page.goto(site.url + f"#/task/{failed.id}")
    expect(page.locator("#d-failures tbody tr")).to_have_count(2)
    page.screenshot(path=str(shots / "dashboard-detail.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 760})
    page.goto(site.url + REFRESH)
    expect(row(page, done.id)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "dashboard-narrow.png"))


def test_an_unknown_task_says_so(site: Site, page: Any) -> None:
    """A detail link to a task that does not exist (or expired) says so, and stays said."""
    from playwright.sync_api import expect

    page.goto(site.url + REFRESH + "#/task/" + "%3Cb%3Enope%3C%2Fb%3E")
    expect(page.locator("#error")).to_have_text(
        "Cannot refresh: no task <b>nope</b> (never created, or expired)"
    )
    expect(page.locator("#d-id")).to_have_text("<b>nope</b>")
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(page.locator("#error")).to_have_text("")
