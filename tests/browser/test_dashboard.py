"""The dashboard in a real browser (Debian's chromium, driven by Playwright): log in,
watch tasks change live, follow a log across a dropped connection, cancel from the page,
read an agent's model-call trace, see a workflow's graph, and use it at phone width.
Screenshots go to $DEPUTY_ARTIFACTS (default target/dashboard-artifacts)."""

import json
import os
import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from support import Daemon, MockModel, Proxy, tempdir

TOKEN = "dashboard-test-token-0123456789"
TIMEOUT_MS = 30_000
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("DEPUTY_BIN", os.path.join(ROOT, "target", "debug", "deputy"))
ARTIFACTS = os.environ.get("DEPUTY_ARTIFACTS", os.path.join(ROOT, "target", "dashboard-artifacts"))
CHROMIUM = os.environ.get("DEPUTY_CHROMIUM", "/usr/bin/chromium")
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def env():
    work = tempdir()
    model = MockModel()
    daemon = Daemon(BINARY, TOKEN, model.base_url, work)
    proxy = Proxy(daemon.port)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield {"daemon": daemon, "proxy": proxy, "model": model, "work": work}
    daemon.stop()
    model.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def log_in(env, browser, errors=None, **options):
    """A new browser context, logged in through the form; returns (context, page). Errors
    thrown in the page from its first load on are appended to `errors` when given."""
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    if errors is not None:
        pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{env['proxy'].url}/login")
    pg.get_by_label("API token").fill(TOKEN)
    pg.get_by_role("button", name="Log in").click()
    return context, pg


@pytest.fixture(scope="module")
def page(env, browser):
    """A logged-in page at 1280x800, through the proxy. Console errors fail the test."""
    errors = []
    context, pg = log_in(env, browser, errors, viewport={"width": 1280, "height": 800})
    expect(pg.get_by_role("heading", name="Tasks")).to_be_visible()
    pg.errors = errors
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"


def shot(pg, name):
    pg.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=False)


def visit(env, pg, view):
    """Opens a view fresh: a hash the page already shows would not render it again."""
    url = f"{env['proxy'].url}/#/{view}"
    if pg.url == url:
        pg.reload()
    else:
        pg.goto(url)


def submit(daemon, **task):
    return daemon.api("POST", "/v1/tasks", task)["task"]


def test_a_wrong_token_is_refused_and_the_right_one_logs_in(env, browser):
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    # Without a session, the page sends a person to the login form.
    pg.goto(f"{env['proxy'].url}/")
    expect(pg).to_have_url(re.compile(r"/login$"))
    pg.get_by_label("API token").fill("not-the-token-at-all-sorry")
    with pg.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as resp:
        pg.get_by_role("button", name="Log in").click()
    assert resp.value.status == 401
    expect(pg.get_by_role("alert")).to_contain_text("not this daemon's API token")
    shot(pg, "login-refused")
    assert not [c for c in context.cookies() if c["name"] == "deputy_session"]
    # The API refuses the page's own calls without a session.
    assert pg.request.get(f"{env['proxy'].url}/v1/tasks").status == 401

    pg.get_by_label("API token").fill(TOKEN)
    pg.get_by_role("button", name="Log in").click()
    expect(pg.get_by_role("heading", name="Tasks")).to_be_visible()
    cookie = [c for c in context.cookies() if c["name"] == "deputy_session"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    context.close()


def test_a_task_goes_queued_running_succeeded_live_without_a_reload(env, page):
    d = env["daemon"]
    gate = os.path.join(env["work"], "go-live")
    d.api("POST", "/v1/queue/pause", {})
    try:
        task = submit(d, name="live-status", command=f"until [ -e {gate} ]; do sleep 0.05; done")
        visit(env, page, "")
        page.evaluate("window.__sameDocument = true")
        row = page.locator(f'tr[data-task="{task["id"]}"]')
        expect(row.locator(".status")).to_have_text("queued")
        expect(page.locator("#queue-state")).to_have_text("queue paused")
        shot(page, "tasks-queued")
    finally:
        d.api("POST", "/v1/queue/resume", {})
    expect(row.locator(".status")).to_have_text("running")
    expect(page.locator("#queue-state")).to_have_text("queue running")
    open(gate, "w").close()
    expect(row.locator(".status")).to_have_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    shot(page, "tasks-succeeded")


def test_filters_narrow_the_list(env, page):
    d = env["daemon"]
    a = submit(d, name="filter-alpha", command="true", labels=["team:alpha"])
    b = submit(d, name="filter-beta", command="true", labels=["team:beta"])
    d.wait_finished(a["id"])
    d.wait_finished(b["id"])
    visit(env, page, "")
    page.get_by_label("Label").fill("team:alpha")
    page.get_by_role("button", name="Filter").click()
    # Wait for the filtered view itself (its form and its loaded rows): the unfiltered
    # one also shows task a, and typing into its form, about to be replaced, is lost.
    expect(page.locator("#task-count")).to_have_text("1 task(s)")
    expect(page.locator(f'tr[data-task="{a["id"]}"]')).to_be_visible()
    expect(page.locator(f'tr[data-task="{b["id"]}"]')).to_have_count(0)
    page.get_by_label("Label").fill("")
    page.get_by_label("Text").fill("filter-beta")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"#/\?q=filter-beta$"))
    expect(page.locator("#task-count")).to_have_text("1 task(s)")
    expect(page.locator(f'tr[data-task="{b["id"]}"]')).to_be_visible()
    expect(page.locator(f'tr[data-task="{a["id"]}"]')).to_have_count(0)
    page.get_by_label("Status").select_option("failed")
    expect(page.locator("#task-count")).to_have_text("No tasks match.")


def test_a_live_log_resumes_after_the_connection_drops(env, page):
    d = env["daemon"]
    gate = os.path.join(env["work"], "go-log")
    command = (
        "for i in $(seq 1 40); do echo line-$i; done; "
        f"until [ -e {gate} ]; do sleep 0.05; done; "
        "for i in $(seq 41 80); do echo line-$i; done; echo oops >&2"
    )
    task = submit(d, name="live-log", command=command)
    visit(env, page, f"task/{task['id']}")
    log = page.locator("#log")
    expect(log).to_contain_text("line-40")
    expect(page.locator("#live")).to_have_text("live")
    # Cut every connection between the browser and the daemon, then let the task go on:
    # the rest of the log must arrive on the resumed stream, nothing lost, nothing twice.
    dropped = env["proxy"].drop_all()
    assert dropped >= 2, "the page had no open streams to drop"
    open(gate, "w").close()
    expect(log).to_contain_text("line-80", timeout=TIMEOUT_MS)
    expect(page.locator("#task-status")).to_have_text("succeeded")
    # The attempts table follows without a reload too.
    expect(page.locator('#attempts tr[data-attempt="1"]')).to_contain_text("succeeded")
    text = log.inner_text()
    lines = [line for line in text.splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 81)], lines
    expect(log.locator(".stderr")).to_have_text("oops\n")
    shot(page, "task-log")


def test_a_task_printing_megabytes_keeps_the_page_bounded(env, page):
    d = env["daemon"]
    task = submit(d, name="big-log", command="seq 1 600000")  # About 4 MB.
    visit(env, page, f"task/{task['id']}")
    expect(page.locator("#task-status")).to_have_text("succeeded")
    log = page.locator("#log")
    expect(log).to_contain_text("600000\n")
    expect(page.locator("#log-note")).to_contain_text("earlier characters are not shown here")
    kept = page.evaluate("document.getElementById('log').textContent.length")
    assert kept <= 450_000, f"the page holds {kept} characters of log"


def test_cancelling_a_running_task_from_the_page_stops_it(env, page):
    d = env["daemon"]
    task = submit(d, name="to-cancel", command="sleep 300")
    visit(env, page, f"task/{task['id']}")
    expect(page.locator("#task-status")).to_have_text("running")
    pgid = d.api("GET", f"/v1/tasks/{task['id']}")["pgid"]
    assert pgid
    page.get_by_role("button", name="Cancel").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("to-cancel")
    shot(page, "cancel-confirm")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#task-status")).to_have_text("cancelled")
    ended = d.wait_finished(task["id"])
    assert ended["status"] == "cancelled"
    # The process group is gone (the daemon reaped it before recording the end).
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)

    # Retry runs it again as attempt 2, and the attempts table shows both.
    page.get_by_role("button", name="Retry").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(page.locator("#task-status")).to_have_text("running")
    expect(page.locator('#attempts tr[data-attempt="2"]')).to_contain_text("running")
    expect(page.locator('#attempts tr[data-attempt="1"]')).to_contain_text("cancelled")
    d.api("POST", f"/v1/tasks/{task['id']}/cancel", {})
    expect(page.locator("#task-status")).to_have_text("cancelled")


def test_the_queue_is_paused_and_resumed_from_the_header(env, page):
    visit(env, page, "")
    page.get_by_role("button", name="Pause queue").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Pause the queue?")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#queue-state")).to_have_text("queue paused")
    assert env["daemon"].api("GET", "/v1/status")["queue_paused"] is True
    page.get_by_role("button", name="Resume queue").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#queue-state")).to_have_text("queue running")
    assert env["daemon"].api("GET", "/v1/status")["queue_paused"] is False


def test_an_api_error_is_shown_as_the_api_said_it(env, page):
    visit(env, page, "submit")
    page.get_by_label("Command (run by sh -c)").fill("true")
    page.get_by_label("Timeout").fill("soon-ish")
    page.get_by_role("button", name="Submit").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    toast = page.locator("#toast")
    expect(toast).to_contain_text("422")
    expect(toast).to_contain_text("timeout")


def test_an_agent_task_submitted_from_the_page_shows_its_trace(env, page):
    visit(env, page, "submit")
    page.get_by_label("Kind").select_option("agent")
    page.get_by_label("Prompt").fill("Summarise the logs in ./logs")
    page.get_by_label("Name").fill("summarise-logs")
    page.get_by_role("button", name="Submit").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name=re.compile("summarise-logs"))).to_be_visible()
    expect(page.locator("#task-status")).to_have_text("succeeded")
    expect(page.locator("#log")).to_contain_text("three timeouts.")
    page.locator("#trace-link").click()
    expect(page.get_by_role("heading", name=re.compile("Model-call trace"))).to_be_visible()
    # 120 input and 9 output tokens at $3 and $15 per million.
    expect(page.locator(".run-summary")).to_contain_text("120 input / 9 output tokens, cost $0.0005")
    step = page.locator(".timeline .label").first
    expect(step).to_contain_text("2 attempts")
    expect(step).to_contain_text("120/9 tok")
    step.click()
    detail = page.locator("#step-detail")
    expect(detail).to_contain_text("Summarise the logs in ./logs")
    expect(detail).to_contain_text("three timeouts.")
    attempts = detail.locator("details.attempt summary")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("503")
    expect(attempts.nth(1)).to_contain_text("200")
    shot(page, "agent-trace")
    href = page.locator("#trace-export").get_attribute("href")
    exported = page.request.get(f"{env['proxy'].url}{href}")
    assert exported.ok
    trace = json.loads(exported.text())
    assert trace["runs"][0]["steps"][0]["attempts"][0]["status_code"] == 503


def test_a_workflow_is_drawn_as_a_graph_that_updates_live(env, page):
    d = env["daemon"]
    gate = os.path.join(env["work"], "go-graph")
    label = "workflow:release"
    batch = d.api("POST", "/v1/tasks", {"tasks": [
        {"key": "build", "name": "build", "command": f"until [ -e {gate} ]; do sleep 0.05; done", "labels": [label]},
        {"key": "test", "name": "test", "command": "true", "labels": [label], "depends_on": [{"key": "build"}]},
        {"key": "lint", "name": "lint", "command": "true", "labels": [label], "depends_on": [{"key": "build"}]},
        {"key": "ship", "name": "ship", "command": "true", "labels": [label],
         "depends_on": [{"key": "test"}, {"key": "lint"}]},
    ]})
    ids = {t["task"]["spec"]["name"]: t["task"]["id"] for t in batch["tasks"]}
    visit(env, page, f"task/{ids['ship']}")
    page.locator("#graph-link").click()
    expect(page.get_by_role("heading", name=re.compile("Dependency graph"))).to_be_visible()
    nodes = page.locator(".graph .node")
    expect(nodes).to_have_count(4)
    expect(page.locator(".graph path.edge")).to_have_count(4)
    ship = page.locator(f'.graph .node[data-task="{ids["ship"]}"]')
    expect(ship).to_have_attribute("data-status", "blocked")
    expect(page.locator(f'.graph .node[data-task="{ids["build"]}"]')).to_have_attribute("data-status", "running")
    # Layers: build left of test and lint, which are left of ship.
    x = {n: page.locator(f'.graph .node[data-task="{i}"]').bounding_box()["x"] for n, i in ids.items()}
    assert x["build"] < x["test"] == x["lint"] < x["ship"], x
    shot(page, "workflow-graph-running")
    open(gate, "w").close()
    expect(ship).to_have_attribute("data-status", "succeeded")
    shot(page, "workflow-graph-done")


def test_groups_can_be_paused_and_limited_with_confirmation(env, page):
    d = env["daemon"]
    d.api("POST", "/v1/groups", {"name": "builds", "parallel": 2})
    visit(env, page, "groups")
    row = page.locator('tr[data-group="builds"]')
    row.get_by_role("button", name="Pause").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(row).to_contain_text("paused")
    assert [g for g in d.api("GET", "/v1/groups") if g["name"] == "builds"][0]["paused"] is True
    row.get_by_label("Parallel limit of builds").fill("3")
    row.get_by_role("button", name="Set").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(page.locator("#toast")).to_have_text("builds: parallel limit 3")
    expect(page.locator('tr[data-group="builds"] input')).to_have_value("3")
    assert [g for g in d.api("GET", "/v1/groups") if g["name"] == "builds"][0]["parallel"] == 3
    # Cancelling the confirmation changes nothing.
    page.locator('tr[data-group="builds"]').get_by_role("button", name="Resume").click()
    page.locator("dialog#confirm").get_by_role("button", name="Cancel").click()
    assert [g for g in d.api("GET", "/v1/groups") if g["name"] == "builds"][0]["paused"] is True
    visit(env, page, "nodes")
    expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(1)
    shot(page, "groups-nodes")


def test_the_keyboard_reaches_every_view(env, page):
    visit(env, page, "")
    page.reload()  # Focus starts at the top of a freshly loaded page.
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.nav") == "groups":
            break
    assert page.evaluate("document.activeElement.dataset.nav") == "groups"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Groups")).to_be_visible()
    # After a change of view, focus moves to the new content (for screen readers too).
    assert page.evaluate("document.activeElement.id") == "main"
    # The confirmation takes Escape for no.
    page.locator('tr[data-group="default"]').get_by_role("button", name="Pause").focus()
    page.keyboard.press("Enter")
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    assert [g for g in env["daemon"].api("GET", "/v1/groups") if g["name"] == "default"][0]["paused"] is False


def test_sparklines_draw_the_daemons_figures(env, page):
    visit(env, page, "")
    spark = page.locator("#figures .spark")
    expect(spark).to_have_count(3)
    expect(page.locator('[data-figure="queued"]')).to_be_visible()


def test_the_page_fits_a_phone(env, browser):
    context, pg = log_in(env, browser, viewport={"width": 390, "height": 844}, is_mobile=True)
    expect(pg.get_by_role("heading", name="Tasks")).to_be_visible()
    overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the phone"
    shot(pg, "phone-tasks")
    context.close()


def test_overview_screenshot(env, page):
    """Last: the task list after everything above ran (the README's picture)."""
    visit(env, page, "")
    expect(page.locator("#task-rows tr").first).to_be_visible()
    shot(page, "overview")


def _luminance(rgb):
    def channel(c):
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b):
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# Each visible text element's colour against the first opaque background behind it.
COLOURS_JS = """
(selectors) => selectors.flatMap((sel) => [...document.querySelectorAll(sel)].slice(0, 3).map((el) => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  let bg = null;
  for (let n = el; n; n = n.parentElement) {
    const c = parse(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) { bg = c.slice(0, 3); break; }
  }
  return { sel, fg: parse(getComputedStyle(el).color).slice(0, 3), bg: bg || [255, 255, 255] };
}))
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_meets_wcag_aa_contrast(env, browser, scheme):
    env["daemon"].wait_finished(submit(env["daemon"], name=f"contrast-{scheme}", command="true")["id"])
    context, pg = log_in(env, browser, viewport={"width": 1280, "height": 800}, color_scheme=scheme)
    expect(pg.locator("#task-rows tr").first).to_be_visible()
    selectors = ["h1", "td", "th", ".muted", "a", "button", "button.primary", "#queue-state",
                 ".badge.st-succeeded", ".badge.st-cancelled", "label", ".spark"]
    found = pg.evaluate(COLOURS_JS, selectors)
    assert {f["sel"] for f in found} >= {"h1", "td", "th", "a", "button.primary", ".badge.st-succeeded"}
    low = [(f["sel"], round(_contrast(f["fg"], f["bg"]), 2)) for f in found if _contrast(f["fg"], f["bg"]) < 4.5]
    assert not low, f"text below 4.5:1 in the {scheme} scheme: {low}"
    shot(pg, f"contrast-{scheme}")
    context.close()
