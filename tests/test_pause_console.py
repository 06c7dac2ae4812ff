"""Pause and resume in the console (issue 32, items 1 and 5): buttons behind a confirmation, POST
only, a session and its CSRF token, the pause shown with since when and by which console user
(escaped), and every action of the console written to the audit trail naming that user. A real
supervisor and HTTP client, and a real Chromium (Playwright) for the operator's clicks."""

from __future__ import annotations

import json
import re

import pytest
from conftest import wait_for
from console_support import csrf_of, login
from test_console_browser import browser, log_in, page, shot  # noqa: F401  (the fixtures)
from web_support import USER, omb

from bridge.home import Home


def audit_lines(home: Home) -> list[str]:
    return [line.split("ombridge.audit: ", 1)[1] for line in (home.log_dir / "ombridge.log").read_text().splitlines()
            if "ombridge.audit: " in line]


def test_pause_and_resume_are_confirmed_posts_and_the_audit_names_the_console_user(home: Home, listening) -> None:
    srv = listening()
    ui = login(srv)
    question = ui.get("/ui/subscribers/1/pause")
    assert question.status_code == 200 and "Pause subscriber 1?" in question.text
    assert "still accepted and stored" in question.text and "Unlike Disable" in question.text
    assert ui.post("/ui/subscribers/1/pause", data={"confirm": "yes"}).status_code == 403  # no CSRF token
    token = csrf_of(ui)
    unconfirmed = ui.post("/ui/subscribers/1/pause", data={"csrf": token})
    assert unconfirmed.status_code == 303 and unconfirmed.headers["location"] == "/ui/subscribers/1/pause"
    assert json.loads(omb(home, "subscriber", "show", "1", "--json").stdout)["paused_at"] is None
    done = ui.post("/ui/subscribers/1/pause", data={"csrf": token, "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/subscribers/1"
    shown = json.loads(omb(home, "subscriber", "show", "1", "--json").stdout)
    assert shown["paused_by"] == f"console user {USER}"
    again = ui.post("/ui/subscribers/1/pause", data={"csrf": token, "confirm": "yes"})
    assert "is already paused since" in ui.get(again.headers["location"]).text  # said, nothing written

    omb(home, "close", "C-1")
    subscriber = ui.get("/ui/subscribers/1").text
    assert re.search(r'<p class="paused" id="paused">.*paused since \S+ \S+ by console user omi', subscriber)
    assert 'href="/ui/subscribers/1/resume" id="pause">Resume…</a>' in subscriber
    assert 'id="paused-1"' in ui.get("/ui/status").text
    assert ui.get("/ui/status?format=json").json()["status"]["paused"][0]["held"] == 1
    assert '<span class="badge paused"' in ui.get("/ui/subscribers").text
    assert ui.get("/ui/subscribers/1/resume").status_code == 200
    ui.post("/ui/subscribers/1/resume", data={"csrf": token, "confirm": "yes"})
    assert ui.get("/ui/subscribers/1/frobnicate").status_code == 404
    ui.post("/ui/subscribers/1/retry", data={"csrf": token})
    ui.post("/ui/status/restart", data={"csrf": token, "what": "eventmanager"})
    wait_for(lambda: home.output.exists() and " Close C-1" in home.output.read_text(), what="the close ran")
    lines = [line for line in audit_lines(home) if line.startswith("console user ")]
    assert any(re.fullmatch(r"local user \S+ on \S+ \(command line\): user omi added", line)
               for line in audit_lines(home))  # (the listening fixture's `ombridge user add`)
    assert lines[0] == ("console user omi: subscriber 1 (backsync) paused on every node: its deliveries are stored "
                        "and wait until `ombridge subscriber resume 1` (0 open deliveries now)")
    assert lines[1] == "console user omi: subscriber 1 (backsync) resumed: its 1 open delivery run now, oldest first"
    assert lines[2] == "console user omi: subscriber 1: 0 failed deliveries reopened"
    assert re.fullmatch(r"console user omi \(through local user \S+ \(pid \d+\)\): restart eventmanager: done", lines[3])
    assert len(lines) == 4


def test_a_console_users_name_is_shown_escaped(home: Home, listening) -> None:
    srv = listening()
    from bridge import store
    from bridge.eventcore import pauses

    conn = store.connect(home)
    pauses.pause(conn, 1, "console user <b>x</b>")  # (names are checked; the page escapes whatever it shows)
    conn.close()
    ui = login(srv)
    assert "by console user &lt;b&gt;x&lt;/b&gt;" in ui.get("/ui/subscribers/1").text
    assert "<b>x</b>" not in ui.get("/ui/status").text


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
def test_an_operator_pauses_the_backsync_for_a_window_and_resumes_it(home: Home, listening, page,  # noqa: F811
                                                                    tmp_path) -> None:
    srv = listening()
    log_in(page, srv.url, "/ui/subscribers/1")
    page.click("text=Pause…")
    assert page.locator("h1").inner_text() == "Pause subscriber 1?"
    page.click("text=Cancel")
    assert json.loads(omb(home, "subscriber", "show", "1", "--json").stdout)["paused_at"] is None
    page.click("text=Pause…")
    page.click("#confirm-yes")
    assert page.locator(".flash.ok").inner_text().startswith("subscriber 1 (backsync) paused on every node")
    assert re.search(r"paused since .* by console user omi", page.locator("#paused").inner_text())
    omb(home, "close", "W-1", "W-2")
    page.goto(srv.url + "/ui/status")
    assert "subscriber 1 (backsync): 2 open" in page.locator("#paused-1").inner_text()
    shot(page, tmp_path, "status-paused")
    page.goto(srv.url + "/ui/subscribers/1")
    page.click("text=Resume…")
    page.click("#confirm-yes")
    assert page.locator(".flash.ok").inner_text() == (
        "subscriber 1 (backsync) resumed: its 2 open deliveries run now, oldest first")
    wait_for(lambda: home.output.exists() and [line.split()[-1] for line in home.output.read_text().splitlines()
                                                if " Close " in line] == ["W-1", "W-2"], what="the closes ran")
