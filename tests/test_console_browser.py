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

from bridge.home import Home
from conftest import wait_for
from web_support import PASSWORD, USER, install, omb

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
    shot(page, tmp_path, "status", keep_as="console-status.png")

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
    shot(page, tmp_path, "delivery", keep_as="console-delivery.png")

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
