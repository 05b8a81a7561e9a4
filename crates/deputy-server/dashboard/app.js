// deputy's dashboard: a single page over the public HTTP API and its SSE streams.
// No framework and nothing fetched from elsewhere. Text from tasks and models is only ever
// set as text (never as HTML), so output cannot inject markup.
"use strict";

const STATUSES = ["blocked", "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted"];
const ENDED = new Set(["succeeded", "failed", "cancelled", "timed_out", "interrupted"]);
const TASK_EVENTS = ["task.created", "task.status", "task.output", "task.finished", "task.agent", "task.cancel_requested"];
// The live log keeps at most this many characters in the page; older output is dropped
// from the view (the full log stays one click away), so a task printing megabytes
// cannot make the page slow.
const LOG_KEEP_CHARS = 400000;

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : String(c));
  return el;
}

const short = (id) => String(id).slice(0, 8);
const badge = (status) => h("span", { class: `badge st-${status}`, "data-status": status }, status.replace("_", " "));
const title = (t) => t.spec.name || summary(t);

function summary(t) {
  const spec = t.spec;
  if (spec.kind === "shell") return Array.isArray(spec.command) ? spec.command.join(" ") : spec.command;
  if (spec.kind === "agent") return `agent: ${(spec.agent && spec.agent.prompt) || ""}`;
  return `(${spec.kind})`;
}

function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec.toFixed(1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m}m ${Math.round(sec % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function taskDuration(t) {
  if (!t.started_at) return null;
  return (t.finished_at || Date.now()) - t.started_at;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: { "X-Deputy-Dashboard": "1" }, credentials: "same-origin" };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `the daemon did not answer (${e.message}); is it running?`);
  }
  if (resp.status === 401) {
    location.assign("/login");
    throw new ApiError(401, "unauthorized", "log in first");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!resp.ok) {
    const err = body && body.error;
    throw new ApiError(resp.status, err ? err.code : "http", err ? err.message : `HTTP ${resp.status}: ${text.slice(0, 300)}`);
  }
  return body;
}

// The API's error, shown as it is (its message already says what to do next).
function showError(e) {
  const toast = document.getElementById("toast");
  toast.className = "";
  toast.textContent = e instanceof ApiError && e.status ? `${e.status} ${e.code}: ${e.message}` : String(e.message || e);
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { toast.textContent = ""; }, 12000);
}

function showOk(text) {
  const toast = document.getElementById("toast");
  toast.className = "ok";
  toast.textContent = text;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { toast.textContent = ""; }, 4000);
}

// A confirmation in a modal dialog: keyboard usable (focus starts on Confirm, Escape
// cancels), and answered with a promise.
function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

// Runs an action after confirmation; shows the API's error as it is.
async function act(question, run, done) {
  if (!(await confirmAction(question))) return;
  try {
    const result = await run();
    if (done) done(result);
  } catch (e) {
    showError(e);
  }
}

// ---------- live events ----------

// One EventSource on /v1/events for the whole page. The browser resumes it after a drop
// with Last-Event-ID; when it gives up (an HTTP error), it is reopened from the last
// event seen. Views subscribe while they are shown.
const live = {
  source: null,
  lastSeq: 0,
  listeners: new Set(),
  retryTimer: null,
  start(after) {
    this.lastSeq = Math.max(this.lastSeq, after);
    // Output is left out: the list and the graph never show it, and a busy task's output
    // would be most of the traffic.
    const types = ["task.created", "task.status", "task.finished", "task.cancel_requested", "queue.updated", "schedule.updated"];
    const source = new EventSource(`/v1/events?types=${types.join(",")}&last_event_id=${this.lastSeq}`);
    this.source = source;
    const indicator = document.getElementById("live");
    source.onopen = () => { indicator.textContent = "live"; indicator.className = "live on"; };
    source.onerror = () => {
      indicator.textContent = "reconnecting…";
      indicator.className = "live off";
      if (source.readyState === EventSource.CLOSED) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.start(this.lastSeq), 2000);
      }
    };
    for (const type of types) {
      source.addEventListener(type, (m) => {
        const ev = JSON.parse(m.data);
        if (ev.seq <= this.lastSeq) return; // Already seen before a reconnect.
        this.lastSeq = ev.seq;
        for (const f of this.listeners) f(ev);
      });
    }
  },
  on(f) { this.listeners.add(f); return () => this.listeners.delete(f); },
};

// ---------- header: queue state and sparklines ----------

async function refreshHeader() {
  try {
    const st = await api("/v1/status");
    const state = document.getElementById("queue-state");
    state.textContent = st.queue_paused ? "queue paused" : "queue running";
    state.className = `badge ${st.queue_paused ? "st-queued" : "st-succeeded"}`;
    const toggle = document.getElementById("queue-toggle");
    toggle.textContent = st.queue_paused ? "Resume queue" : "Pause queue";
    toggle.dataset.paused = st.queue_paused ? "1" : "";
    return st;
  } catch (e) {
    showError(e);
    return null;
  }
}

function sparkline(label, values, unit) {
  const w = 90, hgt = 24;
  const max = Math.max(1, ...values);
  if (values.length === 1) values = [values[0], values[0]];
  const points = values.map((v, i) => `${values.length < 2 ? 0 : (i * w) / (values.length - 1)},${hgt - 2 - (v / max) * (hgt - 4)}`).join(" ");
  const last = values.length ? values[values.length - 1] : 0;
  return h("div", { class: "spark", title: `${label}: last ${values.length} samples, max ${Math.round(max * 100) / 100}` },
    label,
    s("svg", { viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": `${label} over time` }, s("polyline", { points })),
    h("b", { "data-figure": label }, `${Math.round(last * 10) / 10}${unit}`));
}

async function refreshFigures() {
  try {
    const f = await api("/v1/stats");
    const per = f.interval_ms / 1000;
    const box = document.getElementById("figures");
    box.replaceChildren(
      sparkline("queued", f.samples.map((x) => x.queued), ""),
      sparkline("running", f.samples.map((x) => x.running), ""),
      sparkline("done/s", f.samples.map((x) => x.finished / per), ""),
    );
    clearTimeout(refreshFigures.timer);
    refreshFigures.timer = setTimeout(refreshFigures, Math.max(1000, f.interval_ms));
  } catch (e) {
    clearTimeout(refreshFigures.timer);
    refreshFigures.timer = setTimeout(refreshFigures, 10000);
  }
}

// ---------- views ----------

let cleanup = [];
const main = () => document.getElementById("main");

function setView(navName, ...children) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === navName) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main().replaceChildren(...children);
}

// Task list: filters in the address, rows patched live and the page re-read (at most
// every half second) when tasks are created or change status.
async function viewTasks(params) {
  const filters = {
    status: params.get("status") || "",
    group: params.get("group") || "",
    label: params.get("label") || "",
    q: params.get("q") || "",
  };
  const groups = await api("/v1/groups").catch(() => []);
  const statusSelect = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((st) => h("option", { value: st, selected: filters.status === st }, st)),
    h("option", { value: "queued,running", selected: filters.status === "queued,running" }, "queued or running"));
  const groupSelect = h("select", { id: "f-group", name: "group" },
    h("option", { value: "" }, "any group"),
    groups.map((g) => h("option", { value: g.name, selected: filters.group === g.name }, g.name)));
  const labelInput = h("input", { id: "f-label", name: "label", value: filters.label, placeholder: "label" });
  const textInput = h("input", { id: "f-q", name: "q", type: "search", value: filters.q, placeholder: "name or command" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, el] of [["status", statusSelect], ["group", groupSelect], ["label", labelInput], ["q", textInput]]) {
      if (el.value) p.set(k, el.value);
    }
    location.hash = `#/?${p}`;
  } },
  h("div", { class: "field" }, h("label", { for: "f-status" }, "Status"), statusSelect),
  h("div", { class: "field" }, h("label", { for: "f-group" }, "Group"), groupSelect),
  h("div", { class: "field" }, h("label", { for: "f-label" }, "Label"), labelInput),
  h("div", { class: "field" }, h("label", { for: "f-q" }, "Text"), textInput),
  h("button", { type: "submit", class: "primary" }, "Filter"));
  for (const el of [statusSelect, groupSelect]) el.addEventListener("change", () => form.requestSubmit());

  const tbody = h("tbody", { id: "task-rows" });
  const count = h("p", { class: "muted", id: "task-count" });
  setView("tasks", h("h1", {}, "Tasks"), form,
    h("div", { class: "scroll-x" }, h("table", { class: "tasks" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Task"), h("th", {}, "Status"), h("th", { class: "hide-narrow" }, "Group"),
        h("th", { class: "hide-narrow" }, "Command"), h("th", { class: "num" }, "Attempt"),
        h("th", { class: "hide-narrow" }, "Created"), h("th", { class: "num" }, "Duration"))),
      tbody)),
    count);

  const query = new URLSearchParams({ limit: "200" });
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  const rows = new Map();
  async function load() {
    try {
      const page = await api(`/v1/tasks?${query}`);
      rows.clear();
      tbody.replaceChildren(...page.tasks.map((t) => {
        const tr = h("tr", { "data-task": t.id },
          h("td", {}, h("a", { href: `#/task/${t.id}` }, title(t)), " ", h("span", { class: "muted mono" }, short(t.id))),
          h("td", { class: "status" }, badge(t.status)),
          h("td", { class: "hide-narrow" }, t.spec.group),
          h("td", { class: "hide-narrow cmd mono", title: summary(t) }, summary(t)),
          h("td", { class: "num" }, t.attempt),
          h("td", { class: "hide-narrow" }, when(t.created_at)),
          h("td", { class: "num" }, duration(taskDuration(t))));
        rows.set(t.id, tr);
        return tr;
      }));
      count.textContent = page.tasks.length === 0 ? "No tasks match." : `${page.tasks.length} task(s)${page.next_cursor ? " (newest 200 shown)" : ""}`;
    } catch (e) {
      showError(e);
    }
  }
  let reload = null;
  const scheduleLoad = () => { if (!reload) reload = setTimeout(() => { reload = null; load(); }, 500); };
  cleanup.push(() => clearTimeout(reload));
  cleanup.push(live.on((ev) => {
    if (ev.type === "task.status" || ev.type === "task.finished") {
      const tr = rows.get(ev.task);
      const to = ev.type === "task.status" ? ev.data.to : ev.data.status;
      if (tr) tr.querySelector(".status").replaceChildren(badge(to));
      scheduleLoad();
    } else if (ev.type === "task.created") {
      scheduleLoad();
    }
  }));
  await load();
}

// Task detail: facts, actions, attempts, and the live log of its event stream.
async function viewTask(id) {
  let detail;
  try {
    detail = await api(`/v1/tasks/${encodeURIComponent(id)}`);
  } catch (e) {
    setView("tasks", h("h1", {}, "Task"), h("p", { class: "error" }, e.message));
    return;
  }
  const t = detail; // The task's fields, with its attempts and dependents.
  const statusBox = h("span", { id: "task-status" }, badge(t.status));
  const cancelBtn = h("button", { type: "button", class: "danger", id: "cancel-task", disabled: ENDED.has(t.status) }, "Cancel");
  const retryBtn = h("button", { type: "button", id: "retry-task", disabled: !ENDED.has(t.status) }, "Retry");
  cancelBtn.addEventListener("click", () => act(`Cancel task ${title(t)} (${short(t.id)})?`,
    () => api(`/v1/tasks/${t.id}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } }),
    (r) => showOk(`cancel ${r.result}`)));
  retryBtn.addEventListener("click", () => act(`Retry task ${title(t)} as a new attempt?`,
    () => api(`/v1/tasks/${t.id}/retry`, { method: "POST", body: {} }),
    () => { showOk("queued as a new attempt"); route(); }));

  const workflow = t.spec.labels.find((l) => l.startsWith("workflow:"));
  const graphLink = workflow ? `#/graph?label=${encodeURIComponent(workflow)}`
    : (t.depends_on.length || detail.dependents.length) ? `#/graph/${t.id}` : null;
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Id"), h("dd", { class: "mono" }, t.id),
    h("dt", {}, "Kind"), h("dd", {}, t.spec.kind),
    h("dt", {}, "Runs"), h("dd", { class: "mono" }, summary(t)),
    h("dt", {}, "Group"), h("dd", {}, t.spec.group),
    h("dt", {}, "Priority"), h("dd", {}, t.spec.priority),
    h("dt", {}, "Labels"), h("dd", {}, t.spec.labels.length ? t.spec.labels.map((l) => h("a", { href: `#/?label=${encodeURIComponent(l)}`, class: "badge" }, l)) : "none"),
    h("dt", {}, "Created"), h("dd", {}, when(t.created_at)),
    h("dt", {}, "Node"), h("dd", {}, t.node || ""),
    h("dt", {}, "Depends on"), h("dd", {}, t.depends_on.length ? t.depends_on.map((d) => [h("a", { href: `#/task/${d.task}`, class: "mono" }, short(d.task)), ` (${d.mode}) `]) : "nothing"),
    h("dt", {}, "Dependents"), h("dd", {}, detail.dependents.length ? detail.dependents.map((d) => [h("a", { href: `#/task/${d}`, class: "mono" }, short(d)), " "]) : "none"));
  const usageValue = h("dd", { id: "task-usage" });
  facts.append(h("dt", {}, "Usage"), usageValue);
  const showUsage = (task) => {
    const u = task.usage;
    usageValue.textContent = u ? `${u.input_tokens ?? 0} in / ${u.output_tokens ?? 0} out tokens` +
      (u.cost_usd !== undefined ? `, $${u.cost_usd.toFixed(4)}` : "") + (u.turns ? `, ${u.turns} turns` : "") : "—";
  };
  showUsage(t);

  // Attempts are re-read when the task changes status, so the table follows the log.
  const attemptsBox = h("div", { id: "attempts" });
  const showAttempts = (attempts) => attemptsBox.replaceChildren(attempts.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["#", "Status", "Started", "Took", "Exit", "Reason", "Output"].map((c) => h("th", {}, c)))),
      h("tbody", {}, attempts.map((a) => h("tr", { "data-attempt": a.number },
        h("td", { class: "num" }, a.number), h("td", {}, badge(a.status)), h("td", {}, when(a.started_at)),
        h("td", { class: "num" }, duration(a.finished_at ? a.finished_at - a.started_at : null)),
        h("td", { class: "num" }, a.exit_code ?? (a.signal ? `signal ${a.signal}` : "")),
        h("td", {}, a.reason || ""),
        h("td", { class: "num" }, `${a.output_bytes} B${a.omitted_bytes ? ` (${a.omitted_bytes} omitted)` : ""}`)))))
    : h("p", { class: "muted" }, "No attempt has started yet."));
  showAttempts(detail.attempts);
  let rereadTimer = null;
  const reread = () => {
    clearTimeout(rereadTimer);
    rereadTimer = setTimeout(async () => {
      try {
        const fresh = await api(`/v1/tasks/${t.id}`);
        showAttempts(fresh.attempts);
        showUsage(fresh);
      } catch (e) {
        showError(e);
      }
    }, 150);
  };
  cleanup.push(() => clearTimeout(rereadTimer));

  const log = h("pre", { class: "log", id: "log", tabindex: "0", "aria-label": "Task output", "aria-live": "off" });
  const follow = h("input", { type: "checkbox", id: "follow", checked: true });
  const logNote = h("span", { class: "muted", id: "log-note" });
  setView("tasks",
    h("h1", {}, title(t), statusBox),
    h("div", { class: "row" }, cancelBtn, retryBtn,
      t.spec.kind === "agent" ? h("a", { href: `#/task/${t.id}/trace`, id: "trace-link" }, "Model-call trace") : null,
      graphLink ? h("a", { href: graphLink, id: "graph-link" }, "Dependency graph") : null,
      h("a", { href: `/v1/tasks/${t.id}/logs`, target: "_blank", rel: "noopener" }, "Full log (text)")),
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-label": "Facts" }, facts),
      h("section", { class: "card scroll-x", "aria-label": "Attempts" }, h("h2", {}, "Attempts"), attemptsBox)),
    h("div", { class: "log-head" }, h("h2", {}, "Log"), h("label", {}, follow, " follow"), logNote),
    log);

  // The log: the task's own event stream (replayed from the start, then live). Chunks are
  // appended once per animation frame, and the page keeps only the newest
  // LOG_KEEP_CHARS characters.
  let pending = [];
  let kept = 0;
  let dropped = 0;
  let lastSeq = 0;
  let frame = 0;
  const flush = () => {
    frame = 0;
    const frag = document.createDocumentFragment();
    for (const [cls, text] of pending) {
      frag.append(cls ? h("span", { class: cls }, text) : document.createTextNode(text));
      kept += text.length;
    }
    pending = [];
    log.append(frag);
    while (kept > LOG_KEEP_CHARS && log.firstChild) {
      const n = log.firstChild.textContent.length;
      log.firstChild.remove();
      kept -= n;
      dropped += n;
    }
    if (dropped) logNote.textContent = `${dropped} earlier characters are not shown here; the full log has them.`;
    if (follow.checked) log.scrollTop = log.scrollHeight;
  };
  const write = (cls, text) => {
    pending.push([cls, text]);
    if (!frame) frame = requestAnimationFrame(flush);
  };
  let shownAttempt = 0;
  // The newest attempt known: the stream ends with its end, not an earlier one's.
  let lastAttempt = t.attempt;
  let stream = null;
  const open = () => {
    stream = new EventSource(`/v1/tasks/${t.id}/events?last_event_id=${lastSeq}`);
    const onEvent = (m) => {
      const ev = JSON.parse(m.data);
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
      const d = ev.data;
      if (ev.type === "task.output") {
        if (d.attempt !== shownAttempt) {
          shownAttempt = d.attempt;
          write("note", `── attempt ${d.attempt} ──\n`);
        }
        if (d.data === undefined) write("note", `[${d.len} bytes dropped by the output cap]\n`);
        else write(d.stream === "stderr" ? "stderr" : null, d.data);
      } else if (ev.type === "task.status") {
        lastAttempt = Math.max(lastAttempt, d.attempt);
        statusBox.replaceChildren(badge(d.to));
        cancelBtn.disabled = ENDED.has(d.to);
        reread();
      } else if (ev.type === "task.agent") {
        write("note", `[${d.step}${d.tool ? ` ${d.tool}` : ""}${d.detail ? `: ${d.detail.slice(0, 300)}` : ""}]\n`);
      } else if (ev.type === "task.finished") {
        statusBox.replaceChildren(badge(d.status));
        if (d.attempt < lastAttempt) {
          // An earlier attempt's end, replayed: the stream goes on to the newest attempt.
          write("note", `── attempt ${d.attempt} ${d.status} ──\n`);
          return;
        }
        cancelBtn.disabled = true;
        retryBtn.disabled = false;
        reread();
        write("note", `── ${d.status}${d.exit_code !== undefined ? ` (exit ${d.exit_code})` : ""}${d.reason ? `: ${d.reason}` : ""} ──\n`);
        // The stream ends with the task; the browser would otherwise reopen it.
        stream.close();
        stream = null;
      }
    };
    for (const type of TASK_EVENTS) stream.addEventListener(type, onEvent);
    stream.onerror = () => {
      // A dropped connection is resumed by the browser with Last-Event-ID; one it gave
      // up on is reopened from the last event shown.
      if (stream && stream.readyState === EventSource.CLOSED) {
        stream = null;
        setTimeout(() => { if (!closed) open(); }, 2000);
      }
    };
  };
  let closed = false;
  cleanup.push(() => { closed = true; if (stream) stream.close(); if (frame) cancelAnimationFrame(frame); });
  open();
}

// The model-call trace of an agent task: each run's steps on a time line, with their
// attempts; a step opens its request, response and attempts.
async function viewTrace(id) {
  let trace, detail;
  try {
    [trace, detail] = await Promise.all([api(`/v1/tasks/${id}/trace`), api(`/v1/tasks/${id}`)]);
  } catch (e) {
    setView("tasks", h("h1", {}, "Trace"), h("p", { class: "error" }, e.message));
    return;
  }
  const t = detail;
  const parts = [
    h("h1", {}, "Model-call trace: ", h("a", { href: `#/task/${t.id}` }, title(t)), badge(t.status)),
    h("p", { class: "row" },
      h("a", { href: `/v1/tasks/${t.id}/trace`, download: `deputy-trace-${short(t.id)}.json`, id: "trace-export" }, "Export JSON"),
      t.usage && t.usage.cost_usd !== undefined ? h("span", {}, `Task cost: $${t.usage.cost_usd.toFixed(4)}`) : null),
  ];
  if (!trace.runs.length) parts.push(h("p", { class: "muted" }, "No model calls recorded for this task."));
  const detailBox = h("section", { class: "card step-detail", id: "step-detail", "aria-live": "polite" }, h("p", { class: "muted" }, "Choose a step to see its request, response and attempts."));
  for (const run of trace.runs) {
    const start = run.started_at;
    const end = Math.max(run.ended_at || Date.now(), ...run.steps.map((st) => st.ended_at || st.started_at));
    const span = Math.max(1, end - start);
    const pct = (ms) => `${Math.max(0, Math.min(100, ((ms - start) / span) * 100))}%`;
    const width = (a, b) => `${Math.max(0.3, ((b - a) / span) * 100)}%`;
    const u = run.usage || {};
    // Cost is priced per task attempt (from the daemon's `[prices]`), and a run is one attempt.
    const attempt = detail.attempts.find((a) => a.number === run.task_attempt);
    const cost = attempt && attempt.usage && attempt.usage.cost_usd !== undefined ? `, cost $${attempt.usage.cost_usd.toFixed(4)}` : "";
    parts.push(h("h2", {}, `Run ${run.id.slice(0, 8)} · attempt ${run.task_attempt} · ${run.provider}/${run.model} `, badge(run.status)));
    parts.push(h("p", { class: "muted run-summary" },
      `${run.steps.length} step(s), ${u.input_tokens ?? 0} input / ${u.output_tokens ?? 0} output tokens` +
      (u.cached_tokens ? `, ${u.cached_tokens} cached` : "") + cost + `, ${duration(end - start)}` + (run.error ? ` — error: ${run.error}` : "")));
    const timeline = h("div", { class: "timeline", role: "list" });
    for (const step of run.steps) {
      const failed = step.status !== "completed";
      const stepEnd = step.ended_at || end;
      const track = h("div", { class: "track", "aria-hidden": "true" },
        h("div", { class: `bar${failed ? " failed" : ""}`, style: { left: pct(step.started_at), width: width(step.started_at, stepEnd) } }),
        step.first_token_at ? h("div", { class: "bar first-token", style: { left: pct(step.first_token_at) } }) : null,
        step.attempts.map((a) => h("div", { class: `bar attempt${a.error || (a.status_code && a.status_code >= 400) ? " failed" : ""}`, style: { left: pct(a.started_at), width: width(a.started_at, a.started_at + a.duration_ms) } })));
      const su = step.usage || {};
      const label = h("button", { type: "button", class: "label", "aria-pressed": "false", "data-step": step.number },
        `#${step.number} ${step.operation} · ${duration(stepEnd - step.started_at)} · ${su.input_tokens ?? 0}/${su.output_tokens ?? 0} tok` +
        (step.attempts.length > 1 ? ` · ${step.attempts.length} attempts` : "") + (step.error ? " · error" : ""));
      label.addEventListener("click", () => {
        for (const b of document.querySelectorAll(".timeline .label")) b.setAttribute("aria-pressed", "false");
        label.setAttribute("aria-pressed", "true");
        detailBox.replaceChildren(...stepDetail(step).flat().filter(Boolean));
      });
      timeline.append(h("div", { role: "listitem", style: { display: "contents" } }, label, track));
    }
    parts.push(timeline);
  }
  parts.push(h("h2", {}, "Step"), detailBox);
  setView("tasks", ...parts);
}

function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value, null, 2);
}

function stepDetail(step) {
  const u = step.usage || {};
  return [
    h("h3", {}, `Step ${step.number}: ${step.operation} `, badge(step.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Started"), h("dd", {}, when(step.started_at)),
      h("dt", {}, "First token"), h("dd", {}, step.first_token_at ? `after ${duration(step.first_token_at - step.started_at)}` : "—"),
      h("dt", {}, "Took"), h("dd", {}, step.ended_at ? duration(step.ended_at - step.started_at) : "still running"),
      h("dt", {}, "Tokens"), h("dd", {}, `${u.input_tokens ?? 0} input, ${u.output_tokens ?? 0} output` + (u.cached_tokens ? `, ${u.cached_tokens} cached` : "") + (u.reasoning_tokens ? `, ${u.reasoning_tokens} reasoning` : "")),
      step.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, step.error)] : null),
    h("details", { open: true }, h("summary", {}, "Request"), h("pre", { class: "mono" }, pretty(step.request))),
    h("details", { open: true }, h("summary", {}, "Response"), h("pre", { class: "mono" }, step.response ? pretty(step.response) : "(none)")),
    h("h4", {}, `Attempts (${step.attempts.length})`),
    step.attempts.map((a) => h("details", { class: "attempt" },
      h("summary", {}, `#${a.number} ${a.method} ${a.url} → ${a.status_code ?? "no response"} in ${duration(a.duration_ms)}${a.error ? ` — ${a.error}` : ""}`),
      h("p", {}, "Request body"), h("pre", {}, pretty(a.request_body)),
      h("p", {}, "Response body"), h("pre", {}, a.response_body !== null && a.response_body !== undefined ? pretty(a.response_body) : a.chunks.length ? `(streamed: ${a.chunks.length} chunks${a.chunks_omitted ? `, ${a.chunks_omitted} omitted` : ""})\n${a.chunks.join("\n")}` : "(none)"))),
  ];
}

// The dependency graph of a workflow (tasks sharing a `workflow:` label) or of the tasks
// reachable from one task through its edges, laid out in layers and coloured by status.
async function viewGraph(parts, params) {
  let tasks = [];
  let heading;
  try {
    if (params.get("label")) {
      const label = params.get("label");
      heading = label;
      tasks = (await api(`/v1/tasks?limit=1000&label=${encodeURIComponent(label)}`)).tasks;
    } else {
      const seen = new Map();
      const queue = [parts[1]];
      while (queue.length && seen.size < 200) {
        const id = queue.shift();
        if (seen.has(id)) continue;
        const d = await api(`/v1/tasks/${id}`);
        seen.set(d.id, d);
        for (const dep of d.depends_on) queue.push(dep.task);
        for (const dep of d.dependents) queue.push(dep);
      }
      tasks = [...seen.values()];
      heading = `around ${short(parts[1])}`;
    }
  } catch (e) {
    setView("tasks", h("h1", {}, "Graph"), h("p", { class: "error" }, e.message));
    return;
  }
  const byId = new Map(tasks.map((t) => [t.id, t]));
  // Layer = longest path from a root, so every edge points to a later layer.
  const layer = new Map();
  const depth = (id, trail = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (trail.has(id)) return 0;
    trail.add(id);
    const t = byId.get(id);
    const deps = t.depends_on.filter((d) => byId.has(d.task));
    const l = deps.length ? 1 + Math.max(...deps.map((d) => depth(d.task, trail))) : 0;
    layer.set(id, l);
    return l;
  };
  const columns = [];
  for (const t of [...tasks].sort((a, b) => a.created_at - b.created_at)) {
    const l = depth(t.id);
    (columns[l] = columns[l] || []).push(t);
  }
  const W = 180, H = 44, GX = 70, GY = 18, PAD = 16;
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((t, y) => pos.set(t.id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) })));
  const width = PAD * 2 + columns.length * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY) - GY;
  const svg = s("svg", { width: Math.max(width, 200), height: Math.max(height, 80), role: "group", "aria-label": `Dependency graph of ${tasks.length} tasks` },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: "currentColor" }))));
  for (const t of tasks) {
    for (const d of t.depends_on) {
      const a = pos.get(d.task), b = pos.get(t.id);
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)", "data-from": d.task, "data-to": t.id }));
    }
  }
  const nodes = new Map();
  for (const t of tasks) {
    const p = pos.get(t.id);
    const name = title(t);
    const label = name.length > 24 ? `${name.slice(0, 23)}…` : name;
    const statusText = s("text", { x: 10, y: 34, class: "status-text" }, t.status.replace("_", " "));
    const node = s("a", { href: `#/task/${t.id}`, class: `node st-${t.status}`, "data-task": t.id, "data-status": t.status, transform: `translate(${p.x},${p.y})`, "aria-label": `${name}: ${t.status}` },
      s("title", {}, `${name} (${t.status})`),
      s("rect", { width: W, height: H }),
      s("text", { x: 10, y: 18, "font-weight": "600" }, label),
      statusText);
    nodes.set(t.id, { node, statusText });
    svg.append(node);
  }
  setView("tasks",
    h("h1", {}, `Dependency graph: ${heading}`),
    h("div", { class: "legend", "aria-hidden": "true" }, ["queued", "running", "succeeded", "failed", "cancelled"].map(badge)),
    tasks.length ? h("div", { class: "graph" }, svg) : h("p", { class: "muted" }, "No tasks."));
  cleanup.push(live.on((ev) => {
    const n = nodes.get(ev.task);
    if (!n) return;
    const to = ev.type === "task.status" ? ev.data.to : ev.type === "task.finished" ? ev.data.status : null;
    if (!to) return;
    n.node.setAttribute("class", `node st-${to}`);
    n.node.setAttribute("data-status", to);
    n.statusText.textContent = to.replace("_", " ");
  }));
}

async function viewGroups() {
  let groups;
  try {
    groups = await api("/v1/groups");
  } catch (e) {
    showError(e);
    return;
  }
  const reload = () => route();
  const rows = groups.map((g) => {
    const limit = h("input", { type: "number", min: "1", value: g.parallel ?? "", placeholder: "no limit", "aria-label": `Parallel limit of ${g.name}`, style: { width: "7em" } });
    return h("tr", { "data-group": g.name },
      h("td", {}, h("a", { href: `#/?group=${encodeURIComponent(g.name)}` }, g.name)),
      h("td", {}, g.paused ? h("span", { class: "badge st-queued" }, "paused") : h("span", { class: "badge st-succeeded" }, "running")),
      h("td", { class: "num" }, g.running),
      h("td", {}, h("div", { class: "row" }, limit, h("button", { type: "button", onclick: () => act(
        `Set the parallel limit of ${g.name} to ${limit.value || "no limit"}?`,
        () => api(`/v1/groups/${encodeURIComponent(g.name)}`, { method: "PATCH", body: { parallel: limit.value ? Number(limit.value) : null } }),
        (updated) => { showOk(`${updated.name}: parallel limit ${updated.parallel ?? "none"}`); reload(); }) }, "Set"))),
      h("td", {}, h("button", { type: "button", onclick: () => act(
        `${g.paused ? "Resume" : "Pause"} group ${g.name}?`,
        () => api(`/v1/queue/${g.paused ? "resume" : "pause"}`, { method: "POST", body: { group: g.name } }),
        reload) }, g.paused ? "Resume" : "Pause")));
  });
  const name = h("input", { id: "new-group", required: true, pattern: "[A-Za-z0-9._-]{1,64}" });
  const parallel = h("input", { id: "new-group-parallel", type: "number", min: "1", placeholder: "no limit" });
  setView("groups", h("h1", {}, "Groups"),
    h("div", { class: "scroll-x" }, h("table", {}, h("thead", {}, h("tr", {}, ["Group", "State", "Running", "Parallel limit", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows))),
    h("h2", {}, "Add a group"),
    h("form", { class: "row", onsubmit: (e) => {
      e.preventDefault();
      act(`Add group ${name.value}?`, () => api("/v1/groups", { method: "POST", body: { name: name.value, parallel: parallel.value ? Number(parallel.value) : null } }), reload);
    } }, h("label", { for: "new-group" }, "Name"), name, h("label", { for: "new-group-parallel" }, "Parallel"), parallel, h("button", { type: "submit" }, "Add")));
  cleanup.push(live.on((ev) => { if (ev.type === "queue.updated") reload(); }));
}

async function viewNodes() {
  let nodes, st;
  try {
    [nodes, st] = await Promise.all([api("/v1/nodes"), api("/v1/status")]);
  } catch (e) {
    showError(e);
    return;
  }
  const now = Date.now();
  setView("nodes", h("h1", {}, "Nodes"),
    h("p", { class: "muted" }, `This page is served by ${st.node} (deputy ${st.version}, parallel ${st.parallel}, data in ${st.data_dir}).`),
    h("div", { class: "scroll-x" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Node", "Address", "Started", "Last heartbeat", "Running"].map((c) => h("th", {}, c)))),
      h("tbody", {}, nodes.map((n) => h("tr", {},
        h("td", { class: "mono" }, n.id, n.id === st.node ? " (this one)" : ""),
        h("td", { class: "mono" }, n.address || ""),
        h("td", {}, when(n.started_at)),
        h("td", {}, `${duration(now - n.heartbeat_at)} ago`),
        h("td", { class: "num" }, n.running)))))));
}

async function viewSubmit() {
  const groups = await api("/v1/groups").catch(() => [{ name: "default" }]);
  const field = (id, label, input, hint) => h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("span", { class: "muted" }, hint) : null);
  const kind = h("select", { id: "s-kind" }, h("option", { value: "shell" }, "shell command"), h("option", { value: "agent" }, "agent"));
  const command = h("textarea", { id: "s-command", placeholder: "cargo test -p my-crate" });
  const prompt = h("textarea", { id: "s-prompt", placeholder: "Fix the flaky test in crate X" });
  const provider = h("input", { id: "s-provider", placeholder: "the daemon's default" });
  const model = h("input", { id: "s-model", placeholder: "the provider's default" });
  const name = h("input", { id: "s-name" });
  const group = h("select", { id: "s-group" }, groups.map((g) => h("option", { value: g.name }, g.name)));
  const priority = h("select", { id: "s-priority" }, h("option", { value: "P2" }, "P2 normal"), h("option", { value: "P1" }, "P1 high"), h("option", { value: "P0" }, "P0 critical"));
  const labels = h("input", { id: "s-labels", placeholder: "comma-separated" });
  const timeout = h("input", { id: "s-timeout", placeholder: "daemon default, e.g. 10m" });
  const attempts = h("input", { id: "s-attempts", type: "number", min: "1", value: "1" });
  const shellPart = h("div", { id: "shell-fields" }, field("s-command", "Command (run by sh -c)", command));
  const agentPart = h("div", { id: "agent-fields", hidden: true }, field("s-prompt", "Prompt", prompt), field("s-provider", "Provider", provider), field("s-model", "Model", model));
  kind.addEventListener("change", () => { shellPart.hidden = kind.value !== "shell"; agentPart.hidden = kind.value !== "agent"; });
  const form = h("form", { class: "submit card", onsubmit: (e) => {
    e.preventDefault();
    const body = { name: name.value || undefined, group: group.value, priority: priority.value,
      labels: labels.value.split(",").map((l) => l.trim()).filter(Boolean), max_attempts: Number(attempts.value) || 1 };
    if (timeout.value) body.timeout = timeout.value;
    if (kind.value === "shell") body.command = command.value;
    else body.agent = { prompt: prompt.value, provider: provider.value || undefined, model: model.value || undefined };
    act(`Submit this ${kind.value} task to group ${group.value}?`, () => api("/v1/tasks", { method: "POST", body }),
      (r) => { location.hash = `#/task/${r.task.id}`; });
  } },
  field("s-kind", "Kind", kind), shellPart, agentPart, field("s-name", "Name", name),
  h("div", { class: "grid2" }, field("s-group", "Group", group), field("s-priority", "Priority", priority)),
  h("div", { class: "grid2" }, field("s-timeout", "Timeout", timeout), field("s-attempts", "Attempts", attempts)),
  field("s-labels", "Labels", labels),
  h("div", {}, h("button", { type: "submit", class: "primary" }, "Submit")));
  setView("submit", h("h1", {}, "Submit a task"), form);
}

// ---------- router ----------

let routeToken = 0;
async function route() {
  for (const f of cleanup) f();
  cleanup = [];
  const mine = ++routeToken;
  const { parts, params } = parseHash();
  try {
    if (parts[0] === "task" && parts[2] === "trace") await viewTrace(parts[1]);
    else if (parts[0] === "task" && parts[1]) await viewTask(parts[1]);
    else if (parts[0] === "graph") await viewGraph(parts, params);
    else if (parts[0] === "groups") await viewGroups();
    else if (parts[0] === "nodes") await viewNodes();
    else if (parts[0] === "submit") await viewSubmit();
    else await viewTasks(params);
  } catch (e) {
    if (mine === routeToken) showError(e);
  }
}

async function boot() {
  // A change of view moves focus to the new content, as a page load would.
  window.addEventListener("hashchange", async () => { await route(); main().focus({ preventScroll: true }); });
  document.getElementById("queue-toggle").addEventListener("click", (e) => {
    const paused = e.currentTarget.dataset.paused === "1";
    act(paused ? "Resume the queue? Queued tasks start again." : "Pause the queue? Running tasks go on; no new task starts.",
      () => api(`/v1/queue/${paused ? "resume" : "pause"}`, { method: "POST", body: {} }),
      () => refreshHeader());
  });
  const st = await refreshHeader();
  live.on((ev) => { if (ev.type === "queue.updated") refreshHeader(); });
  live.start(st ? st.last_event : 0);
  refreshFigures();
  await route();
}

boot();
