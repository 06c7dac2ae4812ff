"""The operator console over plain HTTP (httpx) against a real supervisor listening on 127.0.0.1:
authentication, sessions, CSRF refusal, escaping, the JSON twins and the answers of the buttons."""

from __future__ import annotations

import html
import json
import time
from typing import Any

import markupsafe
import pytest
from conftest import wait_for
from console_support import csrf_of, form_token, login
from web_support import PASSWORD, USER, install, make_cert, omb

from bridge import store
from bridge.eventcore import catalog, deliveries, events, ledger
from bridge.home import Home
from bridge.model import ActionKind, Attempt
from bridge.web.console.chart import render

XSS = "<script>alert(1)</script>"
PAGES = ["/ui/status", "/ui/status/chart.svg", "/ui/events", "/ui/deliveries", "/ui/deliveries/1", "/ui/topics",
         "/ui/subscribers", "/ui/subscribers/1", "/ui/subscribers/1/purge", "/ui/subscribers/1/remove", "/ui/integrations"]
ACTIONS = ["/ui/logout", "/ui/status/check", "/ui/status/restart", "/ui/deliveries", "/ui/deliveries/1/retry", "/ui/topics",
           "/ui/topics/remove", "/ui/subscribers", "/ui/subscribers/1", "/ui/subscribers/1/retry",
           "/ui/subscribers/1/purge", "/ui/subscribers/1/topics", "/ui/subscribers/1/topics/remove",
           "/ui/subscribers/1/filters", "/ui/subscribers/1/filters/remove", "/ui/subscribers/1/disable",
           "/ui/subscribers/1/remove"]


def test_every_page_and_action_needs_a_user(home: Home, listening) -> None:
    srv = listening()
    omb(home, "close", "EVT-1")
    with srv.client(auth=None, follow_redirects=False) as anon, srv.client(follow_redirects=False) as basic:
        for path in PAGES:
            r = anon.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=" + path, path
            r = anon.get(path + "?format=json")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), path
            assert basic.get(path).status_code == 200, path  # HTTP Basic reads every page
        for path in ACTIONS:
            assert anon.post(path, data={"csrf": "x"}).status_code == 401, path
            # Basic credentials alone never change anything: there is no CSRF token without a session
            assert basic.post(path, data={"csrf": ""}).status_code == 403, path
        wrong = srv.client(auth=(USER, "not-the-password"), follow_redirects=False)
        assert wrong.get("/ui/status?format=json").status_code == 401
        assert anon.get("/healthz").status_code == 200


def test_login_sets_a_strict_session_cookie_and_logout_ends_it(home: Home, listening) -> None:
    srv = listening()
    with srv.client(auth=None, follow_redirects=False) as c:
        page = c.get("/ui/login")
        token = form_token(page.text, "token")
        r = c.post("/ui/login", data={"token": token, "user": USER, "password": "wrong-password"})
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert "ombridge_session" not in r.headers.get("set-cookie", "")
        page = c.get("/ui/login")
        token = form_token(page.text, "token")
        c.cookies.clear()  # the login token must come back in its cookie too
        assert c.post("/ui/login", data={"token": token, "user": USER, "password": PASSWORD}).status_code == 403
        page = c.get("/ui/login")
        r = c.post("/ui/login", data={"token": form_token(page.text, "token"), "user": USER, "password": PASSWORD,
                                      "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/status"  # never redirected off the console
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("ombridge_session="))
        flags = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
        assert {"httponly", "path", "samesite"} <= flags and "samesite=strict" in cookie.lower()
        assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
        r = c.get("/ui/status")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["cache-control"] == "no-store"
        r = c.post("/ui/logout", data={"csrf": csrf_of(c)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        assert c.get("/ui/status").status_code == 303


def test_a_throttled_address_is_told_to_wait_even_with_the_right_password(home: Home, listening) -> None:
    srv = listening()
    with srv.client(auth=None, follow_redirects=False) as c:

        def log_in(password: str) -> Any:
            page = c.get("/ui/login")
            return c.post("/ui/login", data={"token": form_token(page.text, "token"), "user": USER,
                                             "password": password, "next": "/ui/events"})

        failures, deadline = 0, time.monotonic() + 60
        while failures < 5:  # five checked failures: the address then waits 2 s before the next check
            r = log_in(f"wrong-{failures}")
            assert r.status_code in (401, 429) and time.monotonic() < deadline, r.status_code
            failures += r.status_code == 401
            if r.status_code == 429:
                time.sleep(0.05)  # (the throttle's own interval, not a synchronisation)
        r = log_in(PASSWORD)  # the right one, from the throttled address: not even checked
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 8, r.status_code
        text = html.unescape(r.text)
        assert "too many failed logins from this address: wait" in text and "then try again" in text
        assert "wrong user name or password" not in text
        assert 'name="password"' in r.text and f'value="{USER}"' in r.text and 'value="/ui/events"' in r.text
        assert not any(v.startswith("ombridge_session=") for v in r.headers.get_list("set-cookie"))
    with srv.client(auth=(USER, "yet-another-guess")) as basic:  # HTTP Basic on a console page: the same
        r = basic.get("/ui/status?format=json")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "wait" in r.text


@pytest.mark.both_stores
def test_a_session_ends_when_the_user_is_removed_or_changes_password(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    assert c.get("/ui/status?format=json").status_code == 200
    omb(home, "user", "passwd", USER, stdin="Another-Long-Pa55word\n")
    assert c.get("/ui/status?format=json").status_code == 401  # the session is the event core's: refused at once
    # the listener re-reads the users within a second: the old password stops working, the new one works
    wait_for(lambda: srv.client().get("/ui/status?format=json").status_code == 401, what="the old password refused")
    c = login(srv, password="Another-Long-Pa55word")
    omb(home, "user", "remove", USER)
    assert c.get("/ui/status?format=json").status_code == 401


def test_a_post_without_the_right_csrf_token_is_refused_and_changes_nothing(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    for data in ({"name": "task/change", "keys": "TASK"}, {"name": "task/change", "keys": "TASK", "csrf": "forged"}):
        r = c.post("/ui/topics", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    # another session's token is no good either
    other = login(srv)
    r = c.post("/ui/topics", data={"name": "task/change", "keys": "TASK", "csrf": csrf_of(other)})
    assert r.status_code == 403
    assert "task/change" not in omb(home, "topic", "list").stdout
    r = c.post("/ui/topics", data={"name": "task/change", "keys": "APPC TASK", "csrf": csrf_of(c)})
    assert r.status_code == 303 and r.headers["location"] == "/ui/topics"
    assert "topic task/change defined" in c.get("/ui/topics").text
    assert json.loads(omb(home, "topic", "list", "--json").stdout)[-1]["key_fields"] == ["APPC", "TASK"]
    # a GET never changes anything: the action routes answer only POST, or ask the question
    assert c.get("/ui/deliveries/1/retry").status_code == 405
    assert "Remove the topic task/change?" in c.get("/ui/topics/remove?name=task/change").text
    assert "task/change" in omb(home, "topic", "list").stdout


def test_key_values_output_and_messages_are_text_never_html(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "echo \"&TASK\"; exit 3", "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    omb(home, "send", "task/change", json.dumps({"TASK": XSS}))
    wait_for(lambda: ledger.backlog(store.connect(home))["failed"] == 1, what="the delivery failed")
    c = login(srv)
    for path in ("/ui/events", "/ui/deliveries", "/ui/deliveries/1", f"/ui/events?text={XSS}"):
        page = c.get(path).text
        assert XSS not in page and html.escape(XSS, quote=False) in page.replace("&#34;", '"'), path
    # the output tail of the attempt (the command echoed the value) is text too
    assert html.escape(XSS) + "\n</pre>" in c.get("/ui/deliveries/1").text
    # a library error repeating the operator's input comes back as text
    c.post("/ui/topics", data={"name": XSS, "keys": "A", "csrf": csrf_of(c)})
    page = c.get("/ui/topics").text
    assert XSS not in page and "&lt;script&gt;" in page
    # the JSON twin holds the values as they are
    found = c.get("/ui/events?format=json").json()["events"]
    assert json.loads(found[0]["key"]) == {"TASK": XSS}


def test_refusals_are_the_clis_own_sentences(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "APPC")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    c = login(srv)
    cli = omb(home, "subscriber", "filter", "add", sid, "task/change", "&APPC", "KE(", check=False)
    assert cli.returncode != 0
    sentence = cli.stderr.strip().removeprefix("ombridge: error: ")
    r = c.post(f"/ui/subscribers/{sid}/filters", data={"pattern": "task/change", "variable": "&APPC", "regex": "KE(",
                                                       "csrf": csrf_of(c)})
    assert r.status_code == 303
    page = c.get(f"/ui/subscribers/{sid}").text
    assert str(markupsafe.escape(sentence)) in page and 'class="flash error"' in page
    assert omb(home, "subscriber", "show", sid, "--json").stdout.count('"regex"') == 0
    r = c.post(f"/ui/subscribers/{sid}/filters", data={"pattern": "task/change", "variable": "&APPC", "regex": "KE.*",
                                                       "csrf": csrf_of(c)})
    shown = json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)
    assert shown["topics"][0]["filters"][0]["regex"] == "KE.*"
    # a command handing &VARs to a second shell: refused as by the CLI, unless explicitly allowed
    nested = "sh -c 'echo &APPC'"
    cli = omb(home, "subscriber", "add", "--command", nested, check=False)
    sentence = cli.stderr.strip().removeprefix("ombridge: error: ")
    assert cli.returncode != 0 and "second shell" in sentence
    c.post("/ui/subscribers", data={"action": "command", "target": nested, "csrf": csrf_of(c)})
    assert str(markupsafe.escape(sentence)) in c.get("/ui/subscribers").text
    c.post("/ui/subscribers", data={"action": "command", "target": nested, "allow_nested_shell": "on",
                                    "csrf": csrf_of(c)})
    assert nested in [s["target"] for s in json.loads(omb(home, "subscriber", "list", "--json").stdout)]


def test_restart_and_check_answer_as_the_cli_does(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    before = c.get("/ui/status?format=json").json()["status"]["ombacksync"]
    assert before["state"] == "running" and before["perl"]
    c.post("/ui/status/check", data={"csrf": csrf_of(c)})
    assert "syntax OK" in c.get("/ui/status").text
    install(home, "syntax_error")
    c.post("/ui/status/check", data={"csrf": csrf_of(c)})
    page = c.get("/ui/status").text
    perl_says = omb(home, "check", check=False).stderr.strip().splitlines()[0]
    assert 'class="flash error"' in page and html.escape(perl_says, quote=False) in page.replace("&#34;", '"')
    r = c.post("/ui/status/restart", data={"what": "ombacksync", "csrf": csrf_of(c)})
    assert r.status_code == 303
    page = c.get("/ui/status").text
    assert "does not compile; the running ombacksync was kept" in page
    after = c.get("/ui/status?format=json").json()["status"]["ombacksync"]
    assert after["state"] == "running" and after["pid"] == before["pid"]  # the old child serves on
    c.post("/ui/status/restart", data={"what": "eventmanager", "csrf": csrf_of(c)})
    pid = c.get("/ui/status?format=json").json()["status"]["ombacksync"]["pid"]
    assert f"eventmanager restarted; ombacksync running (pid {pid})" in c.get("/ui/status").text  # the CLI's words
    c.post("/ui/status/restart", data={"what": "everything", "csrf": csrf_of(c)})
    assert "cannot restart &#39;everything&#39;" in c.get("/ui/status").text


def test_retry_and_purge_through_the_console(home: Home, listening, tmp_path) -> None:
    srv = listening()
    fixed = tmp_path / "fixed"
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", f"test -e {fixed} || {{ echo not fixed; exit 4; }}",
              "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    for n in range(3):
        omb(home, "send", "task/change", json.dumps({"TASK": f"T{n}"}))
    wait_for(lambda: c_json(srv, "/ui/deliveries?status=failed")["deliveries"].__len__() == 3, what="3 failed")
    c = login(srv)
    d = c.get("/ui/deliveries/1?format=json").json()["delivery"]
    assert [(bool(a["ok"]), a["exit_status"], a["output"]) for a in d["attempt_log"]] == [(False, 4, "not fixed\n")]
    fixed.touch()
    c.post("/ui/deliveries/1/retry", data={"csrf": csrf_of(c)})
    wait_for(lambda: c_json(srv, "/ui/deliveries/1")["delivery"]["status"] == "done", what="delivery 1 done")
    c.post("/ui/deliveries/1/retry", data={"csrf": csrf_of(c)})
    assert "delivery 1 is neither failed nor waiting in backoff: nothing to retry" in c.get("/ui/deliveries/1").text
    fixed.unlink()
    c.post(f"/ui/subscribers/{sid}/retry", data={"csrf": csrf_of(c)})
    assert f"subscriber {sid}: 2 failed deliveries reopened" in c.get("/ui/deliveries").text
    wait_for(lambda: c_json(srv, "/ui/deliveries?status=failed")["deliveries"].__len__() == 2, what="failed again")
    # with retries left, failures stay open (backing off): the purge drops them, after a confirmation
    omb(home, "subscriber", "set", sid, "--retries", "50")
    c.post(f"/ui/subscribers/{sid}/retry", data={"csrf": csrf_of(c)})
    wait_for(lambda: all(len(d["attempt_log"]) == 3 for d in (c_json(srv, f"/ui/deliveries/{i}")["delivery"]
                                                                  for i in (2, 3))), what="third attempts")
    confirm = c.get(f"/ui/subscribers/{sid}/purge")
    assert "<strong>2</strong> open deliveries" in confirm.text
    r = c.post(f"/ui/subscribers/{sid}/purge", data={"csrf": form_token(confirm.text)})  # no "yes": asked again
    assert r.status_code == 303 and r.headers["location"] == f"/ui/subscribers/{sid}/purge"
    r = c.post(f"/ui/subscribers/{sid}/purge", data={"csrf": form_token(confirm.text), "confirm": "yes"})
    assert f"subscriber {sid}: 2 open deliveries purged" in c.get(r.headers["location"]).text
    assert [d["status"] for d in c_json(srv, f"/ui/deliveries?subscriber={sid}")["deliveries"]] == \
        ["purged", "purged", "done"]


def c_json(srv, path: str) -> dict:
    """A JSON twin read with Basic credentials."""
    with srv.client() as c:
        return c.get(path + ("&" if "?" in path else "?") + "format=json").json()


def test_tls_makes_the_session_cookie_secure(home: Home, listening, tmp_path) -> None:
    cert, key = make_cert(tmp_path)
    srv = listening("--tls-cert", str(cert), "--tls-key", str(key), verify=False)
    assert srv.url.startswith("https://")
    with srv.client(auth=None, follow_redirects=False) as c:
        page = c.get("/ui/login")
        r = c.post("/ui/login", data={"token": form_token(page.text, "token"), "user": USER, "password": PASSWORD})
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("ombridge_session="))
        assert "secure" in [p.strip().lower() for p in cookie.split(";")]


def test_the_chart_counts_attempts_and_walks_the_backlog(conn) -> None:
    catalog.add_topic(conn, "task/change", ["TASK"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true", retries=0)
    catalog.attach_topic(conn, sid, "task/change")
    for n in range(5):
        events.send(conn, "task/change", {"TASK": str(n)})
    now = time.time()
    claimed = deliveries.claim(conn, limit=3)
    deliveries.finish(conn, [(c, Attempt(i < 2, now, now, 0 if i < 2 else 1, "", None if i < 2 else "x"))
                             for i, c in enumerate(claimed)])
    act = ledger.activity(conn, now - 3600, now + 1)
    assert sum(act["succeeded"]) == 2 and sum(act["failures"]) == 1
    assert act["backlog"][-1] == 2  # 5 sent, 3 finished
    assert act["backlog"][0] == 0  # an hour ago nothing was open
    svg = render(act)
    assert svg.startswith("<svg") and "<script" not in svg and svg.count("<path") == 3
    assert ledger.activity(conn, now + 7200, now + 7260)["backlog"] == [2]
    with store.transaction(conn):
        assert deliveries.purge(conn, sid) == 2  # purged deliveries leave the backlog when purged
    act = ledger.activity(conn, now - 3600, time.time() + 1)
    assert act["backlog"][-1] == 0 and act["backlog"][0] == 0


def test_bad_parameters_are_one_sentence(home: Home, listening) -> None:
    srv = listening()
    with srv.client() as c:
        for path, code in (("/ui/deliveries?status=bogus", 400), ("/ui/events?before=x", 400),
                           ("/ui/deliveries/999", 404), ("/ui/subscribers/x", 404), ("/ui/subscribers/999", 404)):
            r = c.get(path)
            assert r.status_code == code and r.text.count("\n") == 1, (path, r.text)


def test_operator_mistakes_change_nothing_and_get_one_answer(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    omb(home, "topic", "add", "task/change", "--key", "APPC")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    # an edit is all or nothing: a bad timeout keeps the old command too
    c.post(f"/ui/subscribers/{sid}", data={"action": "command", "target": "echo new", "timeout": "0",
                                           "csrf": csrf_of(c)})
    assert "timeout" in c.get(f"/ui/subscribers/{sid}").text
    assert json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)["target"] == "true"
    # a command allowed to hand &VARs to a second shell keeps its permission when only its timeout changes
    nested = "sh -c 'echo &APPC'"
    nid = omb(home, "subscriber", "add", "--command", nested, "--allow-nested-shell").stdout.strip()
    c.post(f"/ui/subscribers/{nid}", data={"action": "command", "target": nested, "timeout": "7",
                                           "csrf": csrf_of(c)})
    shown = json.loads(omb(home, "subscriber", "show", nid, "--json").stdout)
    assert (shown["target"], shown["timeout"]) == (nested, 7)
    # numbers out of range and limits below one are refused, not answered with everything or a 500
    for path, code in (("/ui/deliveries?limit=-1", 400), ("/ui/deliveries?limit=0", 400),
                       ("/ui/deliveries?subscriber=" + "9" * 30, 400), ("/ui/events?before=" + "9" * 30, 400),
                       ("/ui/subscribers/" + "9" * 30, 404), ("/ui/deliveries/" + "9" * 30, 404)):
        r = c.get(path)
        assert r.status_code == code and r.text.count("\n") == 1, (path, r.status_code, r.text)
    # an action on a subscriber removed meanwhile lands on the list, with the reason
    omb(home, "subscriber", "remove", nid)
    r = c.post(f"/ui/subscribers/{nid}/disable", data={"csrf": csrf_of(c)}, follow_redirects=True)
    assert r.url.path == "/ui/subscribers" and f"no subscriber {nid}" in r.text
    # the check uses the home's perl settings, as `ombridge check` does
    (home.root / "conf" / "ombridge.conf").write_text('[ombacksync]\nperl = "/nonexistent/perl"\n')
    c.post("/ui/status/check", data={"csrf": csrf_of(c)})
    assert "perl not found: /nonexistent/perl" in c.get("/ui/status").text
    # the Event Manager's lanes are shown
    lanes = c.get("/ui/status?format=json").json()["status"]["eventmanager"]["lanes"]
    assert {lane["name"] for lane in lanes} >= {"actions-0", "backsync"}
    assert all(lane["state"] in ("busy", "idle") for lane in lanes)
    # a logged-out session is refused even with a copy of its cookie
    copied = dict(c.cookies)
    c.post("/ui/logout", data={"csrf": csrf_of(c)})
    with srv.client(auth=None, follow_redirects=False) as thief:
        thief.cookies.update(copied)
        assert thief.get("/ui/status").status_code == 303


def test_every_maintenance_screen_changes_what_the_cli_shows(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)

    def post(path: str, **data: str) -> None:
        r = c.post(path, data={**data, "csrf": csrf_of(c)})
        assert r.status_code == 303, (path, r.status_code, r.text)

    def cli_json(*args: str) -> Any:
        return json.loads(omb(home, *args, "--json").stdout)

    post("/ui/topics", name="task/change", keys="APPC TASK", description="changed tasks")
    post("/ui/topics", name="spare/topic", keys="X")
    topics = {t["name"]: t for t in cli_json("topic", "list")}
    assert topics["task/change"]["key_fields"] == ["APPC", "TASK"] and "spare/topic" in topics
    post("/ui/topics/remove", name="spare/topic", confirm="yes")
    assert "spare/topic" not in {t["name"] for t in cli_json("topic", "list")}
    post("/ui/subscribers", action="program", target="/bin/true", timeout="5", retries="2")
    post("/ui/subscribers", action="web", target="http://127.0.0.1:9/hook")
    subs = {s["action"]: s for s in cli_json("subscriber", "list")}
    assert subs["program"]["target"] == "/bin/true" and subs["program"]["retries"] == 2
    assert subs["web"]["target"] == "http://127.0.0.1:9/hook"
    pid = str(subs["program"]["id"])
    post(f"/ui/subscribers/{pid}/topics", pattern="task/change", synchronized="on")
    assert [(t["pattern"], t["synchronized"]) for t in cli_json("subscriber", "show", pid)["topics"]] == \
        [("task/change", 1)]
    post(f"/ui/subscribers/{pid}/topics/remove", pattern="task/change")
    assert cli_json("subscriber", "show", pid)["topics"] == []
    post(f"/ui/subscribers/{pid}/disable")
    assert cli_json("subscriber", "show", pid)["disabled"]
    post(f"/ui/subscribers/{pid}/enable")
    assert not cli_json("subscriber", "show", pid)["disabled"]
    # events: by topic, newest first, a page at a time
    post(f"/ui/subscribers/{pid}/topics", pattern="task/change")
    omb(home, "topic", "add", "other/topic", "--key", "N")
    post(f"/ui/subscribers/{pid}/topics", pattern="other/topic")
    omb(home, "send", "other/topic", '{"N": 1}')
    conn = store.connect(home)
    try:
        events.send_many(conn, [("task/change", {"APPC": "A", "TASK": f"T{n}"}) for n in range(55)])
    finally:
        conn.close()
    other = c.get("/ui/events?topic=other/topic&format=json").json()
    assert [e["topic"] for e in other["events"]] == ["other/topic"]
    first = c.get("/ui/events?topic=task/change&format=json").json()
    assert len(first["events"]) == 50 and json.loads(first["events"][0]["key"])["TASK"] == "T54"
    older = c.get(f"/ui/events?topic=task/change&before={first['next_before']}&format=json").json()
    assert [json.loads(e["key"])["TASK"] for e in older["events"]] == ["T4", "T3", "T2", "T1", "T0"]
    assert older["next_before"] is None
    # integrations: the merged ones are listed
    vendor = home.root / "vendor.pl"
    vendor.write_text("sub OMBackSync { my ($op, $id) = @_; return 1 }\n1;\n")
    omb(home, "integration", "add", "vendor-a", str(vendor))
    page = c.get("/ui/integrations")
    assert page.status_code == 200 and "vendor-a" in page.text


@pytest.mark.both_stores
def test_a_session_outlives_a_restart_and_is_known_to_every_listener_of_the_store(home: Home, listening) -> None:
    """Sessions live in the event core: a second listener (another node behind a load balancer)
    and a restarted supervisor accept the same cookie, and a logout on one ends it on all."""
    from bridge.web.console.session import SESSION_COOKIE

    srv = listening()
    c = login(srv)
    cookie = c.cookies[SESSION_COOKIE]
    token = csrf_of(c)
    omb(home, "stop")
    srv = listening()
    again = srv.client(auth=None, follow_redirects=False)
    again.cookies.set(SESSION_COOKIE, cookie, path="/ui")
    assert again.get("/ui/status?format=json").status_code == 200
    assert csrf_of(again) == token  # the CSRF token does not depend on the process either
    r = again.post("/ui/logout", data={"csrf": token})
    assert r.status_code == 303
    stale = srv.client(auth=None, follow_redirects=False)
    stale.cookies.set(SESSION_COOKIE, cookie, path="/ui")
    assert stale.get("/ui/status?format=json").status_code == 401
