"""The operator console end to end in a real browser: Playwright driving Debian's Chromium against a
real supervisor listening on 127.0.0.1. An operator diagnoses and retries a failed delivery, and
builds a subscriber with a topic and a filter, without the command line (the CLI only plays the
producer that sends events). Screenshots go to tmp_path; docs/ keeps two curated ones.

``make test`` installs Chromium (``apt-get install chromium``) when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from web_support import PASSWORD, USER, install, omb

from bridge.home import Home

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]  # one Chromium, on one worker
from playwright.sync_api import expect  # noqa: E402  (a test dependency: never skipped for want of it)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = "<script>alert(1)</script>"
DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):  # on CI the console must be tested in a browser, never skipped
            pytest.fail(f"{CHROMIUM} is missing: make test installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (make test installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page; any JavaScript dialog fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # a Content-Security-Policy violation (an inline style or script) is logged as a console error
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None)
    yield pg
    context.close()
    assert not dialogs, f"a script ran in the page: {dialogs}"
    assert not errors, f"JavaScript errors: {errors}"


def log_in(pg, url: str, path: str = "/ui/status") -> None:
    pg.goto(url + path)
    assert "/ui/login" in pg.url  # every page asks for a user first
    pg.fill("input[name=user]", USER)
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(re.compile(re.escape(path) + "$"))


def shot(pg, tmp_path: Path, name: str, keep_as: str | None = None) -> None:
    """A screenshot into tmp_path; with OMBRIDGE_DOCS_SHOTS=1, also the docs' copy ``keep_as``."""
    pg.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if keep_as and os.environ.get("OMBRIDGE_DOCS_SHOTS") == "1":
        pg.screenshot(path=str(DOCS / keep_as), full_page=True)


def test_an_operator_finds_a_failed_delivery_reads_why_fixes_it_and_retries(home: Home, listening, page,
                                                                             tmp_path: Path) -> None:
    srv = listening()
    fixed = tmp_path / "ticket-system-up"
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK", "--description", "a task changed")
    sid = omb(home, "subscriber", "add", "--description", "ticket system", "--retries", "0", "--command",
              f"test -e {fixed} && echo \"ticket updated for &TASK\" || {{ echo \"ticket system unreachable for "
              f"&TASK\" >&2; exit 7; }}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    for n in range(3):
        omb(home, "close", f"EVT-{n}")

    log_in(page, srv.url)
    # status: supervisor, ombacksync with perl's version, live refresh without reloading
    assert page.locator("#ombacksync-state").inner_text() == "running"
    assert re.fullmatch(r"5\.\d+\.\d+", page.locator("[data-field='ombacksync.perl']").inner_text())
    assert page.locator("#backlog-failed").inner_text() == "0"
    assert page.locator("[data-field='listener.auth_failures']").inner_text() == "0"  # no stray 401 (favicon)
    omb(home, "send", "task/change", json.dumps({"APPC": "KE1", "TASK": XSS}))
    expect(page.locator("#backlog-failed")).to_have_text("1", timeout=TIMEOUT_MS)
    assert page.locator("#live").inner_text().startswith("live ")
    page.goto(srv.url + "/ui/status")  # the chart, with the Closes and the failure in it
    expect(page.locator("#chart")).to_have_js_property("complete", True)
    assert page.locator("#chart").evaluate("img => img.naturalWidth") == 960
    shot(page, tmp_path, "status")

    # the failed delivery: follow the backlog link, open it, read the attempt
    page.click("#backlog-failed")
    page.wait_for_url(re.compile(r"/ui/deliveries\?status=failed$"))
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert XSS in rows.first.inner_text()  # the key value is shown as text
    rows.first.locator("a").first.click()
    page.wait_for_url(re.compile(r"/ui/deliveries/\d+$"))
    attempt = page.locator("section.attempt")
    assert attempt.count() == 1
    assert "exit status\n7" in attempt.inner_text().replace("\t", "\n")
    assert attempt.locator("pre.output").inner_text().strip() == f"ticket system unreachable for {XSS}"
    assert page.locator("script").count() == 0  # nothing of the key became an element

    # fix the cause, retry, see it done with a second attempt that succeeded
    fixed.touch()
    page.click("#retry")
    assert "is open again and due now" in page.locator(".flash").inner_text()
    for _ in range(200):
        if page.locator("h1 .badge").inner_text() == "done":
            break
        page.wait_for_timeout(100)
        page.reload()
    assert page.locator("h1 .badge").inner_text() == "done"
    attempts = page.locator("section.attempt")
    assert attempts.count() == 2
    assert attempts.nth(1).locator("pre.output").inner_text().strip() == f"ticket updated for {XSS}"
    shot(page, tmp_path, "delivery")

    # the events page: newest first, filter by key text, each event with its deliveries
    page.goto(srv.url + "/ui/events")
    assert page.locator("tbody tr").count() == 4
    page.fill("input[name=text]", "evt-1")
    page.click("form.filters button")
    assert page.locator("tbody tr").count() == 1
    assert "done" in page.locator("tbody tr").first.inner_text()

    # a broken script: the check shows perl's message, the restart is refused, the old child serves
    with srv.client() as c:
        pid = c.get("/ui/status?format=json").json()["status"]["ombacksync"]["pid"]
    install(home, "syntax_error")
    page.goto(srv.url + "/ui/status")
    page.click("text=Restart ombacksync")
    flash = page.locator(".flash.error").inner_text()
    assert "does not compile; the running ombacksync was kept" in flash and "syntax error" in flash
    assert page.locator("#ombacksync-state").inner_text() == "running"
    assert page.locator("[data-field='ombacksync.pid']").inner_text() == str(pid)
    assert not page.locator("#degraded").is_visible()
    # the child dies: the restart finds the broken script; the page shows it live, with perl's message
    os.kill(pid, signal.SIGKILL)
    expect(page.locator("#ombacksync-state")).to_have_text("syntax-error", timeout=TIMEOUT_MS)
    expect(page.locator("#degraded")).to_contain_text("ombacksync is syntax-error")
    expect(page.locator("#last-error")).to_contain_text("syntax error at")
    shot(page, tmp_path, "syntax-error")
    shot(page, tmp_path, "restart-refused")


def test_an_operator_builds_a_subscriber_with_a_topic_and_a_filter(home: Home, listening, page,
                                                                   tmp_path: Path) -> None:
    srv = listening()
    out = tmp_path / "delivered.txt"
    log_in(page, srv.url, "/ui/topics")

    page.fill("#topic-add input[name=name]", "task/change")
    page.fill("#topic-add input[name=keys]", "APPC TASK")
    page.fill("#topic-add input[name=description]", "a task was changed")
    page.click("#topic-add button")
    assert page.locator(".flash.ok").inner_text() == "topic task/change defined"

    page.click("text=Subscribers")
    page.select_option("#subscriber-add select[name=action]", "command")
    page.fill("#subscriber-add input[name=target]", f"echo \"&APPC &TASK\" >> {out}")
    page.fill("#subscriber-add input[name=description]", "task log")
    page.fill("#subscriber-add input[name=retries]", "2")
    page.click("#subscriber-add button")
    message = page.locator(".flash.ok").inner_text()
    sid = re.fullmatch(r"subscriber (\d+) added", message).group(1)
    page.click(f"#subscriber-{sid} a >> nth=0")

    page.fill("#topic-attach input[name=pattern]", "task/change")
    page.click("#topic-attach button")
    assert page.locator(".flash.ok").inner_text() == f"subscriber {sid} attached to task/change"
    page.fill(".filter-add input[name=variable]", "&APPC")
    page.fill(".filter-add input[name=regex]", "KE(")
    page.click(".filter-add button")
    assert page.locator(".flash.error").inner_text().startswith("bad regular expression 'KE('")
    page.fill(".filter-add input[name=variable]", "&APPC")
    page.fill(".filter-add input[name=regex]", "KE.*")
    page.click(".filter-add button")
    assert page.locator(".flash.ok").inner_text() == f"subscriber {sid} on task/change: filter &APPC = KE.*"
    shot(page, tmp_path, "subscriber")

    assert "nobody listens" in omb(home, "send", "task/change", '{"APPC": "XX1", "TASK": "T0"}',
                                      check=False).stderr
    omb(home, "send", "task/change", '{"APPC": "KE1", "TASK": "T1"}')
    wait_for(lambda: out.exists() and out.read_text() == "KE1 T1\n", what="the event delivered")
    page.click("text=Events")
    row = page.locator("tbody tr").first
    assert '"KE1"' in row.inner_text() and "done" in row.inner_text()

    # edit: a new command and timeout; disable; the table shows it
    page.goto(srv.url + f"/ui/subscribers/{sid}")
    page.fill("#subscriber-edit input[name=target]", f"echo \"edited &TASK\" >> {out}")
    page.fill("#subscriber-edit input[name=timeout]", "12.5")
    page.click("#subscriber-edit button")
    assert page.locator(".flash.ok").inner_text() == f"subscriber {sid} updated"
    shown = json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)
    assert shown["target"] == f"echo \"edited &TASK\" >> {out}" and shown["timeout"] == 12.5
    page.click("text=Disable")
    assert page.locator(".flash.ok").inner_text() == f"subscriber {sid} disabled"
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/ui/login$"))
    page.goto(srv.url + "/ui/subscribers")
    assert "/ui/login" in page.url


def failed_count(home: Home) -> int:
    return [d["status"] for d in json.loads(omb(home, "deliveries", "list", "--json").stdout)].count("failed")


def test_an_operator_works_the_failed_backlog_as_in_a_job_dashboard(home: Home, listening, page,
                                                                      tmp_path: Path) -> None:
    """Issue 22's console: a failed login keeps the name; status in words with a red failed
    backlog leading to the failed deliveries; retry a row, a selection, all failed; purge a
    selection after a question; the attempt history by rounds; the chart's window and numbers."""
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK", "--description", "a task changed")
    sid = omb(home, "subscriber", "add", "--description", "ticket system", "--retries", "1", "--command",
              'echo "ticket system unreachable for &TASK" >&2; exit 1').stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    for n in range(4):
        omb(home, "send", "task/change", json.dumps({"APPC": "KE1", "TASK": f"T{n}"}))

    page.goto(srv.url + "/ui/status")
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("wrong user name or password")
    assert page.locator("input[name=user]").input_value() == USER  # typed once
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/status$"))

    # status in words; the failed backlog turns red as it comes (live), and leads to the failures
    failed = page.locator("#backlog-failed")
    expect(failed).to_have_text("4", timeout=TIMEOUT_MS * 2)
    expect(failed).to_have_class(re.compile(r"\balarm\b"))
    text = page.locator("main").inner_text()
    assert "poll_seconds" not in text and "failed_attempts" not in text and "looks for due work every" in text
    assert failed.evaluate("a => getComputedStyle(a).backgroundColor") == "rgb(198, 40, 40)"
    page.reload()  # the chart and its numbers: the last hour first, where all of this happened
    expect(page.locator("#chart")).to_have_js_property("complete", True)
    numbers = page.locator("#numbers")
    assert numbers.get_attribute("open") is not None
    assert sum(int(c) for c in numbers.locator("tbody tr td:nth-child(4)").all_inner_texts()) == 8
    shot(page, tmp_path, "status", keep_as="console-status.png")
    page.click("#window-24h")
    page.wait_for_url(re.compile(r"window=24h$"))
    expect(page.locator("#chart")).to_have_js_property("complete", True)
    assert page.locator("#numbers tbody tr").count() == 12 and "here" in page.locator("#window-24h").get_attribute("class")
    page.click("#backlog-failed")
    page.wait_for_url(re.compile(r"/ui/deliveries\?status=failed$"))
    assert page.locator("tbody tr").count() == 4
    shot(page, tmp_path, "deliveries")

    # one row's Retry button; then two ticked; then all failed, no subscriber chosen
    page.click("#delivery-1 button[name=one]")
    expect(page.locator(".flash.ok")).to_have_text("delivery 1 is open again and due now")
    assert page.url.endswith("/ui/deliveries?status=failed")  # back where the operator was
    wait_for(lambda: failed_count(home) == 4, timeout=60, what="delivery 1 failed again")
    page.reload()
    page.check("#delivery-2 input[name=id]")
    page.check("#delivery-3 input[name=id]")
    page.click("#retry-chosen")
    expect(page.locator(".flash.ok")).to_have_text("2 of 2 chosen deliveries reopened")
    wait_for(lambda: failed_count(home) == 4, timeout=60, what="2 and 3 failed again")
    page.goto(srv.url + "/ui/deliveries")
    page.click("#retry-all")
    expect(page.locator(".flash.ok")).to_have_text("4 failed deliveries reopened")
    wait_for(lambda: failed_count(home) == 4, timeout=60, what="all failed again")

    # delivery 1's history: six attempts in time order, three rounds, only rounds 2 and 3 after a retry
    page.goto(srv.url + "/ui/deliveries/1")
    assert page.locator("#history").inner_text().startswith("failed, 6 attempts in 3 rounds (retried 2 times)")
    heads = [h.split(" ")[0] for h in page.locator("section.attempt h3").all_inner_texts()]
    assert heads == ["#1", "#2", "#3", "#4", "#5", "#6"]
    assert page.locator("h3.round").all_inner_texts() == ["Round 1", "Round 2 after a retry", "Round 3 after a retry"]
    shot(page, tmp_path, "delivery", keep_as="console-delivery.png")

    # every failed one ticked at once, purged after the question
    page.goto(srv.url + "/ui/deliveries?status=failed")
    page.check("#select-all")
    assert page.locator("input[name=id]:checked").count() == 4
    page.click("#purge-chosen")
    expect(page.locator("h1")).to_have_text("Purge 4 chosen deliveries?")
    assert failed_count(home) == 4  # asked, nothing dropped yet
    page.click("#confirm-purge")
    expect(page.locator(".flash.ok")).to_have_text("4 of 4 chosen deliveries purged")
    page.goto(srv.url + "/ui/status")
    expect(page.locator("#backlog-failed")).to_have_text("0")
    assert "alarm" not in (page.locator("#backlog-failed").get_attribute("class") or "")


def test_keys_fold_to_one_line_and_removals_ask_first(home: Home, listening, page, tmp_path: Path) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK", "--key", "NOTE", "--key", "OWNER")
    omb(home, "topic", "add", "spare/topic", "--key", "X")
    for n in range(3):
        omb(home, "send", "task/change", json.dumps({"APPC": "KE1", "TASK": f"T{n}", "NOTE": XSS, "OWNER": "ops"}),
            "--force")
    spare = omb(home, "subscriber", "add", "--description", "spare", "--command", "true").stdout.strip()
    log_in(page, srv.url, "/ui/events")
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    key = rows.first.locator("details.key")
    assert json.loads(key.locator("summary").inner_text()) == {"APPC": "KE1", "TASK": "T2", "NOTE": XSS, "OWNER": "ops"}
    assert not key.locator("pre").is_visible()
    assert all(rows.nth(i).bounding_box()["height"] < 60 for i in range(3))  # one line each
    key.locator("summary").click()
    expect(key.locator("pre")).to_be_visible()
    assert key.locator("pre").inner_text().count("\n") >= 4  # expanded: a field a line
    shot(page, tmp_path, "events")

    page.goto(srv.url + "/ui/topics")
    page.locator("tr", has_text="spare/topic").locator("text=Remove…").click()
    expect(page.locator("h1")).to_have_text("Remove the topic spare/topic?")
    page.click("text=Cancel")
    assert page.locator("tr", has_text="spare/topic").count() == 1  # not removed
    page.locator("tr", has_text="spare/topic").locator("text=Remove…").click()
    page.click("#confirm-yes")
    expect(page.locator(".flash.ok")).to_have_text("topic spare/topic removed")
    assert page.locator("tr", has_text="spare/topic").count() == 0

    page.goto(srv.url + f"/ui/subscribers/{spare}")
    page.click("text=Remove…")
    expect(page.locator("h1")).to_have_text(f"Remove subscriber {spare}?")
    assert omb(home, "subscriber", "show", spare).returncode == 0
    page.click("#confirm-yes")
    expect(page.locator(".flash.ok")).to_have_text(f"subscriber {spare} removed")


def test_disabling_a_system_subscriber_asks_first_and_says_what_it_refuses(home: Home, listening, page) -> None:
    """Issue 28: one click on Disable must not leave OMi's closes refused unannounced."""
    srv = listening()
    subs = json.loads(omb(home, "subscriber", "list", "--json").stdout)
    sid = next(s["id"] for s in subs if s["action"] == "backsync")
    log_in(page, srv.url, f"/ui/subscribers/{sid}")
    page.click("text=Disable…")
    expect(page.locator("h1")).to_have_text(f"Disable system subscriber {sid}?")
    assert "answered 503" in page.locator("main").inner_text()
    page.click("text=Cancel")
    assert json.loads(omb(home, "subscriber", "show", str(sid), "--json").stdout)["disabled"] == 0
    page.click("text=Disable…")
    page.click("#confirm-yes")
    expect(page.locator(".flash.ok")).to_have_text(f"subscriber {sid} disabled")
    assert json.loads(omb(home, "subscriber", "show", str(sid), "--json").stdout)["disabled"] == 1
    page.click("button:text('Enable')")
    expect(page.locator(".flash.ok")).to_have_text(f"subscriber {sid} enabled")


def test_an_operator_locked_out_by_wrong_passwords_is_told_to_wait_then_gets_in(home: Home, listening, page) -> None:
    srv = listening()
    page.goto(srv.url + "/ui/status")
    flash = page.locator(".flash.error")

    def submit(password: str) -> str:
        page.fill("input[name=user]", USER)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return flash.inner_text() if flash.count() else ""

    wrong = 0
    while wrong < 5:  # five checked failures: the address then waits 2 s between checks
        said = submit(f"guess-{wrong}")
        assert "wrong user name or password" in said or "too many failed logins" in said, said
        wrong += "wrong user name or password" in said
    said = submit(PASSWORD)  # the right password, too soon: told to wait, not that it is wrong
    assert re.fullmatch(r"too many failed logins from this address: wait \d s, then try again", said), said
    assert "/ui/login" in page.url and page.input_value("input[name=user]") == USER
    wait_for(lambda: not submit(PASSWORD), timeout=30, what="the login admitted after the wait")
    page.wait_for_url(re.compile(r"/ui/status$"))
