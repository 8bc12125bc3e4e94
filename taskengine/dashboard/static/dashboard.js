// The taskengine dashboard: plain script, no dependencies, no build step.
// Every value from the server is put in the page with textContent or .value, never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "taskengine.token";
  const OPTION_KEYS = {
    DELETE_BY_QUERY: "deleteByQueryOptions",
    COPY_FIELD_DATA: "copyFieldDataOptions",
    EDIT_FIELD_DATA: "editFieldDataOptions",
    UPDATE_PUBLISH_STATUS: "updatePublishStatusOptions",
  };
  const query = new URLSearchParams(location.search);
  const clamp = (n, lo, hi, d) => (Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : d);
  // One request per refresh for the visible view; the interval is bounded below.
  const REFRESH = clamp(parseInt(query.get("refresh"), 10), 200, 60000, 1000);
  const PAGE_SIZE = clamp(parseInt(query.get("pageSize"), 10), 1, 100, 20);

  const state = {
    view: null, offset: 0, taskId: null, timer: null, inflight: false, again: false,
    rows: new Map(), needLogin: false, validateSeq: 0, validateTimer: null, detail: null,
  };

  class ApiError extends Error {
    constructor(status, body) {
      super(messageOf(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function messageOf(status, body) {
    if (body && typeof body.message === "string") return body.message;
    return status ? `HTTP ${status}` : "the server cannot be reached";
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, null);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.status === 401) {
      const refused = Boolean(t);
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(refused ? "That token was refused." : "");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  const taskPath = (id) => `cms/v1/tasks/${encodeURIComponent(id)}`;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (key === "text") node.textContent = value;
        else if (key === "class") node.className = value;
        else node.setAttribute(key, value);
      }
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function showError(message) {
    setText($("error"), message || "");
  }

  // -- polling ----------------------------------------------------------------------

  function polling() {
    if (state.needLogin || document.hidden) return false;
    if (state.view === "list") return true;
    return state.view === "detail" && !(state.detail && isFinished(state.detail));
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = null;
    if (polling()) state.timer = setTimeout(tick, delay);
  }

  function kick() {
    clearTimeout(state.timer);
    state.timer = null;
    if (state.inflight) state.again = true;
    else tick();
  }

  async function tick() {
    state.timer = null;
    state.inflight = true;
    state.again = false;
    try {
      if (state.view === "list") await refreshList();
      else if (state.view === "detail") await refreshDetail();
      if (!state.needLogin) {
        showError("");
        setText($("live"), `Updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
      }
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showError(`Cannot refresh: ${e.message}`);
    } finally {
      state.inflight = false;
      if (state.again) tick();
      else schedule(REFRESH);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(state.timer);
      state.timer = null;
      setText($("live"), "Paused");
    } else if (state.view === "list" || state.view === "detail") {
      kick();
    }
  });

  // -- task display -----------------------------------------------------------------

  const isFinished = (t) => t.status === "COMPLETED" || t.status === "FAILED";

  function statusOf(t) {
    const first = (t.failures && t.failures[0]) || {};
    if (t.status === "FAILED" && first.code === "CANCELLED") return ["CANCELLED", "FAILED · cancelled"];
    if (t.status === "RUNNING" && t.cancelRequested) return ["CANCEL_REQUESTED", "RUNNING · cancel requested"];
    if (t.status === "COMPLETED" && t.itemsFailed > 0) return ["PARTIAL", "COMPLETED · with failures"];
    return [t.status, String(t.status)];
  }

  const optionsOf = (t) => t[OPTION_KEYS[t.type]] || {};

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    if (d.toDateString() === new Date().toDateString()) {
      return d.toLocaleTimeString([], { hour12: false });
    }
    return d.toLocaleString([], {
      hour12: false, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    });
  }

  function makeBar() {
    const fill = el("span");
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0" }, fill);
    const count = el("span", { class: "count" });
    return { bar, fill, count };
  }

  function updateBar(parts, t) {
    const done = (t.itemsSucceeded || 0) + (t.itemsFailed || 0);
    const estimate = Math.max(t.estimatedItemCount || 0, done);
    let pct = estimate > 0 ? (100 * done) / estimate : 0;
    if (t.status === "COMPLETED") pct = 100;
    parts.fill.style.width = `${pct.toFixed(1)}%`;
    parts.bar.setAttribute("aria-valuemax", String(estimate));
    parts.bar.setAttribute("aria-valuenow", String(done));
    parts.bar.dataset.failed = t.itemsFailed > 0 ? "yes" : "no";
    setText(parts.count, `${done} / ${t.estimatedItemCount || 0}`);
  }

  function updateStatus(node, t) {
    const [key, label] = statusOf(t);
    node.dataset.state = key;
    setText(node, label);
  }

  // -- the list ---------------------------------------------------------------------

  const COLUMNS = ["Task", "Collection", "Env", "Status", "Progress", "OK / failed", "Started", "Finished", "Owner", ""];

  function makeRow(id) {
    const cells = COLUMNS.map((label) => el("td", { "data-label": label }));
    const link = el("a", { class: "mono" });
    const type = el("span", { class: "type" });
    cells[0].append(el("div", null, link, type));
    const status = el("span", { class: "status" });
    cells[3].append(status);
    const bar = makeBar();
    bar.bar.setAttribute("aria-label", "Progress");
    cells[4].append(el("div", null, bar.bar, bar.count));
    cells[5].className = "num";
    cells[6].className = "time";
    cells[7].className = "time";
    const cancel = el("button", { type: "button", class: "danger", text: "Cancel" });
    cancel.addEventListener("click", () => cancelTask(id, cancel));
    cells[9].append(cancel);
    const tr = el("tr", { "data-id": id }, ...cells);
    return { tr, cells, link, type, status, bar, cancel };
  }

  function updateRow(row, t) {
    const o = optionsOf(t);
    setText(row.link, t.id);
    row.link.href = `#/task/${encodeURIComponent(t.id)}`;
    row.link.title = t.id;
    setText(row.type, t.type);
    setText(row.cells[1], o.dataCollectionId == null ? "—" : String(o.dataCollectionId));
    setText(row.cells[2], o.environment || "LIVE");
    updateStatus(row.status, t);
    updateBar(row.bar, t);
    setText(row.cells[5], `${t.itemsSucceeded || 0} / ${t.itemsFailed || 0}`);
    setText(row.cells[6], fmtTime(t.startedAt));
    row.cells[6].title = t.startedAt || "";
    setText(row.cells[7], fmtTime(t.finishedAt));
    row.cells[7].title = t.finishedAt || "";
    setText(row.cells[8], t.owner || "—");
    row.cancel.hidden = isFinished(t) || Boolean(t.cancelRequested);
    row.cancel.setAttribute("aria-label", `Cancel task ${t.id}`);
  }

  async function refreshList() {
    const offset = state.offset;
    const data = await api("GET", `dashboard/v1/tasks?paging.limit=${PAGE_SIZE}&paging.offset=${offset}`);
    if (state.view !== "list" || state.offset !== offset) return;
    const body = $("tasks").tBodies[0];
    const seen = new Set();
    data.tasks.forEach((t, index) => {
      let row = state.rows.get(t.id);
      if (!row) {
        row = makeRow(t.id);
        state.rows.set(t.id, row);
      }
      updateRow(row, t);
      seen.add(t.id);
      if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
    });
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        state.rows.delete(id);
      }
    }
    const { total, count } = data.metadata;
    $("empty").hidden = total > 0;
    setText($("range"), total ? `${offset + 1}–${offset + count} of ${total}` : "");
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + count >= total;
  }

  $("prev").addEventListener("click", () => go(Math.max(0, state.offset - PAGE_SIZE)));
  $("next").addEventListener("click", () => go(state.offset + PAGE_SIZE));

  function go(offset) {
    location.hash = offset ? `#/?offset=${offset}` : "#/";
  }

  async function cancelTask(id, button) {
    button.disabled = true;
    try {
      await api("DELETE", taskPath(id));
      showError("");
    } catch (e) {
      if (e.status !== 401) showError(`Cannot cancel: ${e.message}`);
    } finally {
      button.disabled = false;
      kick();
    }
  }

  // -- the detail -------------------------------------------------------------------

  const detailBar = makeBar();
  $("d-progress").append(detailBar.bar, detailBar.count);
  detailBar.bar.setAttribute("aria-label", "Progress");

  function flatten(value, path, out) {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [key, inner] of Object.entries(value)) flatten(inner, path ? `${path}.${key}` : key, out);
    } else {
      out.push([path, typeof value === "string" ? value : JSON.stringify(value)]);
    }
    return out;
  }

  function fillPairs(node, pairs) {
    node.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  async function refreshDetail() {
    const id = state.taskId;
    let data;
    try {
      data = await api("GET", `dashboard/v1/tasks/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404 && state.taskId === id) {
        state.detail = { status: "COMPLETED" }; // nothing more to poll
        throw new Error(`no task ${id} (never created, or expired)`);
      }
      throw e;
    }
    if (state.view !== "detail" || state.taskId !== id) return;
    const t = data.task;
    state.detail = t;
    setText($("d-id"), t.id);
    setText($("d-type"), t.type);
    setText($("d-owner"), t.owner || "—");
    updateStatus($("d-status"), t);
    updateBar(detailBar, t);
    setText($("d-ok"), String(t.itemsSucceeded || 0));
    setText($("d-failed"), String(t.itemsFailed || 0));
    $("d-cancel").hidden = isFinished(t) || Boolean(t.cancelRequested);
    fillPairs($("d-times"), [
      ["Created", t.createdAt || "—"], ["Started", t.startedAt || "—"],
      ["Finished", t.finishedAt || "—"], ["Expires", t.expiresAt || "—"],
    ]);
    fillPairs($("d-options"), flatten(optionsOf(t), "", []));
    const failures = t.failures || [];
    setText($("d-failcount"), `(${failures.length} listed, ${t.itemsFailed || 0} items failed)`);
    $("d-failures").tBodies[0].replaceChildren(...failures.map((f) => {
      const data = f.data;
      const item = data && "itemId" in data ? String(data.itemId) : data ? JSON.stringify(data) : "—";
      return el("tr", null, el("td", { class: "mono", text: String(f.code) }),
        el("td", { text: String(f.description) }), el("td", { class: "mono", text: item }));
    }));
    const json = JSON.stringify(t, null, 2);
    if ($("d-json").value !== json) $("d-json").value = json;
  }

  $("d-cancel").addEventListener("click", () => cancelTask(state.taskId, $("d-cancel")));
  $("d-copy").addEventListener("click", async () => {
    const text = $("d-json").value;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      $("d-json").select();
      document.execCommand("copy");
    }
    setText($("d-copied"), "Copied.");
    setTimeout(() => setText($("d-copied"), ""), 2000);
  });

  // -- collections ------------------------------------------------------------------

  let collections = [];

  async function loadCollections() {
    const data = await api("GET", "dashboard/v1/collections");
    collections = data.collections;
    return collections;
  }

  async function showCollections() {
    try {
      await loadCollections();
      showError("");
    } catch (e) {
      if (e.status !== 401) showError(`Cannot read the collections: ${e.message}`);
      return;
    }
    const yes = (b) => (b ? "yes" : "no");
    const n = (v) => (v == null ? "—" : String(v));
    $("collections").tBodies[0].replaceChildren(...collections.map((c) => el("tr", null,
      el("td", { text: c.name }), el("td", { class: "num", text: n(c.counts.LIVE) }),
      el("td", { class: "num", text: n(c.counts.SANDBOX) }), el("td", { text: yes(c.sandboxEnabled) }),
      el("td", { text: yes(c.publishPlugin) }))));
  }

  $("col-refresh").addEventListener("click", showCollections);

  // -- the new-task form ------------------------------------------------------------

  const form = $("task-form");
  const fields = () => [...form.querySelectorAll(".field")];
  const raw = () => $("raw-mode").checked;

  function syncFields() {
    const type = $("f-type").value;
    for (const field of fields()) {
      const types = field.dataset.types;
      if (field.classList.contains("raw")) field.hidden = !raw();
      else field.hidden = raw() || (types !== undefined && !types.split(" ").includes(type));
    }
    const scheduling = $("f-operation").value.startsWith("SCHEDULE_");
    $("f-date").disabled = !scheduling;
  }

  function readJSON(id, kind, errors, key) {
    const text = $(id).value.trim();
    if (!text) return undefined;
    try {
      const value = JSON.parse(text);
      const ok = kind === "array" ? Array.isArray(value) : value && typeof value === "object" && !Array.isArray(value);
      if (!ok) errors.push([key, `must be a JSON ${kind}`]);
      return value;
    } catch (e) {
      errors.push([key, `not valid JSON: ${e.message}`]);
      return undefined;
    }
  }

  // The task JSON the form describes, and the JSON syntax errors found on the way.
  function formSpec() {
    const errors = [];
    const type = $("f-type").value;
    const o = {};
    const put = (key, value) => {
      if (value !== undefined && value !== "") o[key] = value;
    };
    put("dataCollectionId", $("f-collection").value);
    put("environment", $("f-environment").value);
    if (type !== "COPY_FIELD_DATA") put("filter", readJSON("f-filter", "object", errors, "filter"));
    if (type === "DELETE_BY_QUERY" && $("f-drafts").checked) {
      o.publishPluginOptions = { includeDraftItems: true };
    } else if (type === "COPY_FIELD_DATA") {
      put("sourceFieldKey", $("f-source").value.trim());
      put("targetFieldKey", $("f-target").value.trim());
    } else if (type === "EDIT_FIELD_DATA") {
      put("fieldKey", $("f-fieldkey").value.trim());
      const ops = {};
      for (const [id, key] of [["f-add", "addItems"], ["f-remove", "removeItems"], ["f-replace", "replaceItems"]]) {
        const value = readJSON(id, "array", errors, `operations.${key}`);
        if (value !== undefined) ops[key] = value;
      }
      if ($("f-dedupe").checked) ops.removeDuplicates = true;
      o.operations = ops;
    } else if (type === "UPDATE_PUBLISH_STATUS") {
      const operation = $("f-operation").value;
      o.operation = operation;
      const date = $("f-date").value.trim();
      if (operation === "SCHEDULE_PUBLISHED_STATUS") o.schedulePublishedStatusOptions = date ? { date } : {};
      if (operation === "SCHEDULE_DRAFT_STATUS") o.scheduleDraftStatusOptions = date ? { date } : {};
    }
    return { spec: { type, [OPTION_KEYS[type]]: o }, errors };
  }

  function rawSpec() {
    const errors = [];
    let value;
    try {
      value = JSON.parse($("f-raw").value);
    } catch (e) {
      return { spec: null, errors: [["", `not valid JSON: ${e.message}`]] };
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      errors.push(["", "must be a JSON object"]);
    } else if (Object.keys(value).length === 1 && "task" in value) {
      value = value.task;
    }
    return { spec: value, errors };
  }

  const currentSpec = () => (raw() ? rawSpec() : formSpec());

  function clearErrors() {
    for (const field of fields()) {
      field.dataset.invalid = "no";
      const p = field.querySelector(".field-error");
      if (p) p.textContent = "";
      for (const control of field.querySelectorAll("input, select, textarea")) control.removeAttribute("aria-invalid");
    }
    $("form-errors").replaceChildren();
  }

  // Put each violation (path relative to the options, or "type") next to its field.
  function placeErrors(list) {
    clearErrors();
    const visible = fields().filter((f) => !f.hidden);
    for (const [path, description] of list) {
      let best = null;
      let bestLength = -1;
      for (const field of visible) {
        for (const key of field.dataset.key.split(" ")) {
          const match = key === "" ? raw() : path === key || path.startsWith(`${key}.`);
          if (match && key.length > bestLength) {
            best = field;
            bestLength = key.length;
          }
        }
      }
      const text = raw() || !best ? `${path || "task"}: ${description}` : description;
      if (best) {
        best.dataset.invalid = "yes";
        const p = best.querySelector(".field-error");
        p.textContent = p.textContent ? `${p.textContent}\n${text}` : text;
        for (const control of best.querySelectorAll("input, select, textarea")) control.setAttribute("aria-invalid", "true");
      } else {
        $("form-errors").append(el("li", { text }));
      }
    }
  }

  function relative(field, spec) {
    let path = String(field).replace(/^task\.?/, "");
    const key = spec && OPTION_KEYS[spec.type];
    if (!raw() && key && path.startsWith(`${key}.`)) path = path.slice(key.length + 1);
    return path;
  }

  function violationsOf(error, spec) {
    const v = error.body && error.body.details && error.body.details.validationError;
    if (!v) return null;
    return v.fieldViolations.map((f) => [relative(f.field, spec), String(f.description)]);
  }

  // Ask the server whether the current spec would be created; true when it would.
  async function validateNow() {
    const seq = ++state.validateSeq;
    const { spec, errors } = currentSpec();
    if (errors.length) {
      placeErrors(errors);
      setText($("form-state"), "Fix the marked fields.");
      return false;
    }
    try {
      await api("POST", "dashboard/v1/validate", { task: spec });
      if (seq !== state.validateSeq) return false;
      clearErrors();
      setText($("form-state"), "Valid.");
      return true;
    } catch (e) {
      if (seq !== state.validateSeq) return false;
      const list = violationsOf(e, spec);
      if (list) {
        placeErrors(list);
        setText($("form-state"), `${list.length} problem(s): see the marked fields.`);
      } else if (e.status !== 401) {
        setText($("form-state"), `Cannot check: ${e.message}`);
      }
      return false;
    }
  }

  function validateSoon() {
    clearTimeout(state.validateTimer);
    state.validateTimer = setTimeout(validateNow, 350);
  }

  form.addEventListener("input", validateSoon);
  form.addEventListener("change", () => {
    syncFields();
    validateSoon();
  });
  $("raw-mode").addEventListener("change", () => {
    if (raw()) $("f-raw").value = JSON.stringify({ task: formSpec().spec }, null, 2);
    syncFields();
    clearErrors();
    validateSoon();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearTimeout(state.validateTimer);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      if (!(await validateNow())) return;
      const { spec } = currentSpec();
      const seq = ++state.validateSeq;
      try {
        const data = await api("POST", "cms/v1/tasks", { task: spec });
        setText($("form-state"), "Created.");
        location.hash = `#/task/${encodeURIComponent(data.task.id)}`;
      } catch (e) {
        const list = violationsOf(e, spec);
        if (list && seq === state.validateSeq) placeErrors(list);
        else if (e.status !== 401) setText($("form-state"), `Cannot create: ${e.message}`);
      }
    } finally {
      button.disabled = false;
    }
  });

  async function showForm() {
    syncFields();
    try {
      await loadCollections();
    } catch (e) {
      if (e.status !== 401) showError(`Cannot read the collections: ${e.message}`);
      return;
    }
    const select = $("f-collection");
    const chosen = select.value;
    select.replaceChildren(...collections.map((c) => el("option", { value: c.name, text: c.name })));
    if (!collections.length) select.append(el("option", { value: "", text: "(no collections)" }));
    if (collections.some((c) => c.name === chosen)) select.value = chosen;
  }

  // -- token ------------------------------------------------------------------------

  function showLogin(message) {
    state.needLogin = true;
    clearTimeout(state.timer);
    state.timer = null;
    show("login");
    setText($("login-error"), message);
    $("forget").hidden = true;
    $("token-input").focus();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    state.needLogin = false;
    route();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.rows.forEach((row) => row.tr.remove());
    state.rows.clear();
    showLogin("");
  });

  // -- routing ----------------------------------------------------------------------

  function show(view) {
    for (const name of ["login", "list", "detail", "new", "collections"]) $(`view-${name}`).hidden = name !== view;
    for (const link of document.querySelectorAll("nav a[data-view]")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, search] = hash.split("?");
    state.needLogin = false;
    $("forget").hidden = !token();
    state.detail = null;
    if (path.startsWith("/task/")) {
      state.view = "detail";
      state.taskId = decodeURIComponent(path.slice(6));
      setText($("d-id"), state.taskId);
      $("d-failures").tBodies[0].replaceChildren();
      $("d-json").value = "";
    } else if (path === "/new") {
      state.view = "new";
    } else if (path === "/collections") {
      state.view = "collections";
    } else {
      state.view = "list";
      state.offset = clamp(parseInt(new URLSearchParams(search || "").get("offset"), 10), 0, 1e15, 0);
    }
    show(state.view);
    showError("");
    if (state.view === "new") showForm();
    else if (state.view === "collections") showCollections();
    else kick();
  }

  window.addEventListener("hashchange", () => {
    route();
    $("main").focus({ preventScroll: true });
  });
  route();
})();
