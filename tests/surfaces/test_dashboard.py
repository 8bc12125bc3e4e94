"""The dashboard's WSGI app without a browser: its files, routes, token rule, mounting,
the dry-run validation (a law: it refuses exactly what a create refuses), the owners
(the same as ``tasks list``) and the collections view."""

from __future__ import annotations

import io
import json
import re
import subprocess
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cli_runner import executable as cli_executable
from cli_runner import exited_pid, line_reader, make_shop_db, owner_id, wait_for_line
from dashboard_site import fill
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskengine._slices import Slices
from taskengine.cli._owners import holder, owner_label
from taskengine.dashboard import STATIC_FILES, make_dashboard_app, page_files
from taskengine.dashboard._data import holder_label
from taskengine.engine import TaskEngine
from taskengine.errors import InvalidTask
from taskengine.storage import MemoryStorage

STATIC = Path(__file__).resolve().parents[2] / "taskengine" / "dashboard" / "static"
PAGE_LIMIT = 50 * 1024


def call(
    app: Any,
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
    script_name: str = "",
    query: str = "",
) -> tuple[int, dict[str, str], bytes]:
    """One request through the WSGI app: status, headers, body."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": script_name,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(headers)

    chunks = app(environ, start_response)
    return seen["status"], seen["headers"], b"".join(chunks)


@pytest.fixture
def engine() -> TaskEngine:
    """An engine (not started) over the test site's three collections."""
    storage = MemoryStorage()
    fill(storage)
    return TaskEngine(storage)


def test_the_page_is_served_small_and_self_contained(engine: TaskEngine) -> None:
    """`/` and its two files: right types, a strict CSP, under 50 KB together, nothing
    loaded from elsewhere."""
    app = make_dashboard_app(engine)
    total = 0
    for route, (name, content_type) in STATIC_FILES.items():
        status, headers, body = call(app, "GET", route)
        assert status == 200
        assert headers["Content-Type"] == content_type
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body == (STATIC / name).read_bytes()
        total += len(body)
        status, headers, body = call(app, "HEAD", route)
        assert (status, body) == (200, b"")
    assert total == sum(len(data) for data in page_files().values())
    assert total < PAGE_LIMIT
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    assert call(app, "POST", "/")[0] == 405


def test_the_script_never_writes_markup() -> None:
    """Values reach the page through textContent/value only: no HTML-parsing sink."""
    script = (STATIC / "dashboard.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "new Function" not in script


def test_with_a_token_no_data_without_it(engine: TaskEngine) -> None:
    """The page's files are served (they hold no data); every data route needs the token."""
    app = make_dashboard_app(engine, token="s3cret")
    assert call(app, "GET", "/")[0] == 200
    spec = {
        "task": {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Plain"}}
    }
    requests = [
        ("GET", "/dashboard/v1/tasks", None),
        ("GET", "/dashboard/v1/collections", None),
        ("GET", "/dashboard/v1/tasks/nope", None),
        ("POST", "/dashboard/v1/validate", spec),
        ("GET", "/cms/v1/tasks", None),
        ("GET", "/dashboard/v1/nothing", None),
    ]
    for method, path, body in requests:
        for token in (None, "wrong"):
            status, headers, answer = call(app, method, path, body=body, token=token)
            assert status == 401, (method, path, token)
            assert "tasks" not in json.loads(answer)
            assert headers["WWW-Authenticate"].startswith("Bearer")
    for method, path, body in requests[:-1]:
        expected = 404 if path.endswith("nope") else 200
        assert call(app, method, path, body=body, token="s3cret")[0] == expected, path
    assert call(app, "GET", "/dashboard/v1/nothing", token="s3cret")[0] == 404
    assert engine.list_tasks().total == 0  # validate stored nothing


def test_mounted_under_a_prefix(engine: TaskEngine) -> None:
    """With ``prefix`` the app answers under it only; the bare prefix redirects to the page."""
    app = make_dashboard_app(engine, prefix="/ops/tasks/")
    status, headers, _ = call(app, "GET", "/ops/tasks", query="refresh=500")
    assert (status, headers["Location"]) == (301, "/ops/tasks/?refresh=500")
    assert call(app, "GET", "/ops/tasks/")[0] == 200
    assert call(app, "GET", "/ops/tasks/dashboard.js")[0] == 200
    assert call(app, "GET", "/ops/tasks/dashboard/v1/tasks")[0] == 200
    assert call(app, "GET", "/ops/tasks/cms/v1/tasks")[0] == 200
    assert call(app, "GET", "/")[0] == 404
    assert call(app, "GET", "/ops/tasksx")[0] == 404
    # A host that mounts by SCRIPT_NAME (no prefix): the bare mount point redirects too.
    plain = make_dashboard_app(engine)
    status, headers, _ = call(plain, "GET", "", script_name="/ui")
    assert (status, headers["Location"]) == (301, "/ui/")
    with pytest.raises(ValueError, match="prefix"):
        make_dashboard_app(engine, prefix="ui")


def test_tasks_page_and_bad_paging(engine: TaskEngine) -> None:
    """The list route answers the API's page plus owners; paging errors are 400 by field."""
    ids = [engine.create_task(_copy("Plain")).id for _ in range(3)]
    app = make_dashboard_app(engine)
    status, _, body = call(
        app, "GET", "/dashboard/v1/tasks", query="paging.limit=2&paging.offset=1"
    )
    data = json.loads(body)
    assert status == 200
    assert [t["id"] for t in data["tasks"]] == ids[::-1][1:3]
    assert data["metadata"] == {"count": 2, "offset": 1, "total": 3}
    assert all(t["owner"] == "waiting" for t in data["tasks"])  # nobody claimed them
    for query, field in [
        ("paging.limit=x", "paging.limit"),
        ("paging.limit=0", "paging.limit"),
        ("paging.offset=-1", "paging.offset"),
    ]:
        status, _, body = call(app, "GET", "/dashboard/v1/tasks", query=query)
        violations = json.loads(body)["details"]["validationError"]["fieldViolations"]
        assert status == 400
        assert [v["field"] for v in violations] == [field]
    assert call(app, "POST", "/dashboard/v1/tasks")[0] == 405


def test_a_sliced_task_that_started_is_held_by_its_slices(engine: TaskEngine) -> None:
    """A sliced task that started holds no lease itself: the dashboard shows the live
    holder of one of its slices (as ``tasks list`` does), not ``waiting``."""
    store = engine.task_store
    now = engine.clock.now()
    created = engine.create_task(_copy("Plain"), slices=2)
    parent = attrs.evolve(created.started(now, 2), slices=2, split=("m",))
    store.save(parent)  # started, and its slices inserted, as its engine does
    Slices(store, engine.clock, timedelta(days=1), lambda task: None).ensure(parent)
    assert holder_label(store, engine.get_task(created.id), now) == "waiting"
    assert store.claim(f"{created.id}~1", "otherhost:4242:abcd", now, timedelta(seconds=30))
    assert holder_label(store, engine.get_task(created.id), now) == "otherhost/4242"
    _, _, body = call(make_dashboard_app(engine), "GET", "/dashboard/v1/tasks")
    assert [(t["id"], t["owner"]) for t in json.loads(body)["tasks"]] == [
        (created.id, "otherhost/4242")
    ]


def test_owners_agree_with_tasks_list(engine: TaskEngine) -> None:
    """The owner shown for each holder state is the CLI's OWNER column, word for word."""
    store = engine.task_store
    now = engine.clock.now()
    states = {
        name: engine.create_task(_copy("Plain")).id
        for name in ("waiting", "live", "ran-out", "exited", "finished")
    }
    lease = timedelta(seconds=30)
    assert store.claim(states["live"], "otherhost:4242:abcd", now, lease)
    assert store.claim(states["ran-out"], "otherhost:4243:abcd", now - 2 * lease, lease)
    assert store.claim(states["exited"], owner_id(exited_pid()), now, lease)
    engine.cancel_task(states["finished"])
    shown = {}
    for name, task_id in states.items():
        task = engine.get_task(task_id)
        cli = holder(store, task, now)
        ours = holder_label(store, task, now)
        assert ours == (None if cli is None else owner_label(cli))
        shown[name] = ours
    assert shown == {
        "waiting": "waiting",
        "live": "otherhost/4242",
        "ran-out": "waiting (lease ran out)",
        "exited": "waiting (owner exited)",
        "finished": None,
    }
    _, _, body = call(make_dashboard_app(engine), "GET", "/dashboard/v1/tasks")
    listed = {t["id"]: t for t in json.loads(body)["tasks"]}
    assert listed[states["live"]]["owner"] == "otherhost/4242"
    assert "owner" not in listed[states["finished"]]
    app = make_dashboard_app(engine)
    status, _, body = call(app, "GET", f"/dashboard/v1/tasks/{states['live']}")
    assert status == 200
    assert json.loads(body)["task"] == {
        **engine.get_task(states["live"]).to_json(),
        "owner": "otherhost/4242",
    }
    _, _, body = call(app, "GET", f"/dashboard/v1/tasks/{states['finished']}")
    assert json.loads(body)["task"] == engine.get_task(states["finished"]).to_json()
    status, _, body = call(app, "GET", "/dashboard/v1/tasks/nope")
    assert status == 404
    assert json.loads(body)["details"]["applicationError"]["code"] == "TASK_NOT_FOUND"
    assert call(app, "DELETE", f"/dashboard/v1/tasks/{states['live']}")[0] == 405
    assert call(app, "GET", f"/dashboard/v1/tasks/{states['live']}/x")[0] == 404


def test_collections_view(engine: TaskEngine) -> None:
    status, _, body = call(make_dashboard_app(engine), "GET", "/dashboard/v1/collections")
    assert status == 200
    assert json.loads(body)["collections"] == [
        {
            "name": "Gated",
            "sandboxEnabled": False,
            "publishPlugin": False,
            "counts": {"LIVE": 30, "SANDBOX": None},
            "exact": True,
        },
        {
            "name": "Items",
            "sandboxEnabled": True,
            "publishPlugin": True,
            "counts": {"LIVE": 10, "SANDBOX": 2},
            "exact": True,
        },
        {
            "name": "Plain",
            "sandboxEnabled": False,
            "publishPlugin": False,
            "counts": {"LIVE": 5, "SANDBOX": None},
            "exact": True,
        },
    ]


def test_validate_answers(engine: TaskEngine) -> None:
    app = make_dashboard_app(engine)
    status, _, body = call(app, "POST", "/dashboard/v1/validate", body={"task": _copy("Plain")})
    assert status == 200
    assert json.loads(body) == {
        "valid": True,
        "type": "COPY_FIELD_DATA",
        "options": {
            "dataCollectionId": "Plain",
            "environment": "LIVE",
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    }
    for sent, field in [(b"{", "body"), ({}, "task"), ({"task": []}, "task")]:
        status, _, body = call(app, "POST", "/dashboard/v1/validate", body=sent)
        assert status == 400
        violations = json.loads(body)["details"]["validationError"]["fieldViolations"]
        assert violations[0]["field"] == field
    assert call(app, "GET", "/dashboard/v1/validate")[0] == 405
    assert engine.list_tasks().total == 0


def _copy(collection: str) -> dict[str, Any]:
    return {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": collection,
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    }


TYPES = {
    "DELETE_BY_QUERY": "deleteByQueryOptions",
    "COPY_FIELD_DATA": "copyFieldDataOptions",
    "EDIT_FIELD_DATA": "editFieldDataOptions",
    "UPDATE_PUBLISH_STATUS": "updatePublishStatusOptions",
}
OPTION_FIELDS = [
    "dataCollectionId",
    "environment",
    "filter",
    "sourceFieldKey",
    "targetFieldKey",
    "fieldKey",
    "operations",
    "operation",
    "publishPluginOptions",
    "scheduleDraftStatusOptions",
]


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text("ab$_", max_size=3), inner, max_size=3)
    )


junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text("ab$_.", max_size=4)),
    _containers,
    max_leaves=8,
)
values = st.one_of(
    junk,
    st.sampled_from(
        ["Plain", "n", "m", "_id", "LIVE", "SANDBOX", "SET_DRAFT_STATUS", "SCHEDULE_DRAFT_STATUS"]
    ),
)
VALID = {
    "DELETE_BY_QUERY": {"dataCollectionId": "Plain"},
    "COPY_FIELD_DATA": {"dataCollectionId": "Plain", "sourceFieldKey": "n", "targetFieldKey": "m"},
    "EDIT_FIELD_DATA": {
        "dataCollectionId": "Plain",
        "fieldKey": "n",
        "operations": {"removeDuplicates": True},
    },
    "UPDATE_PUBLISH_STATUS": {"dataCollectionId": "Plain", "operation": "SET_DRAFT_STATUS"},
}
specs = st.one_of(
    junk,
    # a valid task with up to two options changed (often still valid, often not)
    st.builds(
        lambda kind, changes: {"type": kind, TYPES[kind]: {**VALID[kind], **changes}},
        st.sampled_from(sorted(TYPES)),
        st.dictionaries(st.sampled_from(OPTION_FIELDS), values, max_size=2),
    ),
    st.builds(
        lambda kind, options: {"type": kind, TYPES.get(str(kind), "copyFieldDataOptions"): options},
        st.one_of(st.sampled_from(sorted(TYPES)), st.none(), st.integers(), st.text(max_size=3)),
        st.one_of(st.dictionaries(st.sampled_from(OPTION_FIELDS), values, max_size=5), junk),
    ),
)


@settings(max_examples=150, deadline=None)
@given(spec=specs)
@example(spec=_copy("Plain"))
@example(spec={"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "x"}})
@example(spec={"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {"dataCollectionId": "x"}})
def test_validate_refuses_exactly_what_create_refuses(spec: Any) -> None:
    """Law: the dry run answers 200 iff create stores the task, and otherwise the same
    400 body (every violation, same paths and words); the dry run stores nothing."""
    engine = TaskEngine(MemoryStorage())
    app = make_dashboard_app(engine)
    dry = call(app, "POST", "/dashboard/v1/validate", body={"task": spec})
    assert engine.list_tasks().total == 0
    real = call(app, "POST", "/cms/v1/tasks", body={"task": spec})
    assert (dry[0], real[0]) in ((200, 200), (400, 400))
    if dry[0] == 400:
        assert json.loads(dry[2]) == json.loads(real[2])
        with pytest.raises(InvalidTask):
            engine.create_task({"task": spec})
    else:
        created = json.loads(real[2])["task"]
        assert json.loads(dry[2])["options"] == created[TYPES[created["type"]]]


def test_serve_shows_the_dashboard(tmp_path: Path) -> None:
    """`taskengine serve` answers `/` with the page, beside the API, and says where."""
    db = make_shop_db(tmp_path)
    proc = subprocess.Popen(
        [cli_executable(), "serve", "--db", str(db), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = wait_for_line(line_reader(proc.stdout), "Serving")
        address = line.split("http://", 1)[1].split("/", 1)[0]
        assert f"the dashboard on http://{address}/ " in line
        with urllib.request.urlopen(f"http://{address}/", timeout=30) as answer:
            assert answer.read() == page_files()["index.html"]
        with urllib.request.urlopen(
            f"http://{address}/dashboard/v1/collections", timeout=30
        ) as answer:
            assert [c["name"] for c in json.load(answer)["collections"]] == ["Items", "Plain"]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
