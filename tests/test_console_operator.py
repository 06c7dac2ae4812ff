"""The console as an operator expects it (issue 22), over plain HTTP against a real supervisor:
status in words with a red failed backlog, retry and purge from the deliveries list (one row, a
selection, all failed), keys on one line, the chart's window and numbers, confirmations before a
removal, a failed login that keeps the user name. The same through the CLI where it has them."""

from __future__ import annotations

import html
import json
import re

from conftest import wait_for
from console_support import csrf_of, form_token, login
from web_support import USER, omb

from bridge.home import Home

XSS = "<script>alert(1)</script>"


def failing_subscriber(home: Home, events: int) -> str:
    """A subscriber that always fails (no retry), and ``events`` events for it."""
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "echo down >&2; exit 3", "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    for n in range(events):
        omb(home, "send", "task/change", json.dumps({"TASK": f"T{n}"}))
    return sid


def statuses(home: Home) -> dict[int, str]:
    return {d["id"]: d["status"] for d in json.loads(omb(home, "deliveries", "list", "--json").stdout)}


def all_failed(home: Home, n: int) -> None:
    wait_for(lambda: list(statuses(home).values()).count("failed") == n, timeout=60, what=f"{n} failed")


def flash_after(c, r) -> str:
    assert r.status_code == 303, (r.status_code, r.text)
    page = c.get(r.headers["location"]).text
    found = re.search(r'<div class="flash [a-z]+" role="status"><p>(.*?)</p>', page, re.S)
    assert found, page[:500]
    return html.unescape(found.group(1))


def test_the_deliveries_list_retries_a_row_a_selection_or_all_and_purges_a_selection(home: Home, listening) -> None:
    srv = listening()
    failing_subscriber(home, 4)
    all_failed(home, 4)
    c = login(srv)
    page = c.get("/ui/deliveries?status=failed").text
    assert page.count('name="one" value=') == 4  # a retry button per failed row
    assert page.count('type="checkbox" name="id"') == 4 and 'id="retry-all"' in page

    def post(**data) -> str:
        fields = {"csrf": csrf_of(c, "/ui/deliveries"), "back": "/ui/deliveries?status=failed", **data}
        return flash_after(c, c.post("/ui/deliveries", data=fields))

    assert post(one="1") == "delivery 1 is open again and due now"
    all_failed(home, 4)
    assert post(do="retry", id=["2", "3"]) == "2 of 2 chosen deliveries reopened"
    all_failed(home, 4)
    assert post(do="retry") == "nothing to retry: tick the deliveries first"
    assert post(do="retry-all") == "4 failed deliveries reopened"  # no subscriber chosen first
    all_failed(home, 4)
    # a purge asks first (nothing changes), then drops the chosen ones
    confirm = c.post("/ui/deliveries", data={"csrf": csrf_of(c), "do": "purge", "id": ["1", "4"],
                                             "back": "/ui/deliveries"})
    assert confirm.status_code == 200 and "Purge 2 chosen deliveries?" in confirm.text
    assert list(statuses(home).values()).count("failed") == 4
    r = c.post("/ui/deliveries", data={"csrf": form_token(confirm.text), "do": "purge", "id": ["1", "4"],
                                       "confirm": "yes", "back": "https://evil.example/"})
    assert r.headers["location"] == "/ui/deliveries"  # never sent off the console
    assert flash_after(c, r) == "2 of 2 chosen deliveries purged"
    assert statuses(home) == {1: "purged", 2: "failed", 3: "failed", 4: "purged"}
    # the CLI does the same
    assert omb(home, "retry", "--delivery", "2", "--delivery", "1").stdout.strip() == "1 failed deliveries reopened"
    all_failed(home, 2)
    assert omb(home, "deliveries", "purge", "2", "3").stdout.strip() == "2 deliveries purged"
    assert set(statuses(home).values()) == {"purged"}
    # bad input: one sentence, nothing changed
    for data, code in (({"do": "explode"}, 400), ({"do": "retry", "id": "x"}, 400), ({"one": "-1"}, 400)):
        r = c.post("/ui/deliveries", data={"csrf": csrf_of(c), **data})
        assert r.status_code == code and r.text.count("\n") == 1, (data, r.text)
    assert omb(home, "deliveries", "purge", check=False).returncode == 2


def test_status_reads_in_words_and_a_failed_backlog_is_red(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    page = c.get("/ui/status").text
    shown = re.sub(r'data-field="[^"]*"', "", page)  # what the reader sees, not the live refresh's hooks
    for field in ("poll_seconds", "failed_attempts", "auth_failures", ">workers<", "last_error_at"):
        assert field not in shown, field
    assert "looks for due work every" in page and "failed attempts since start" in page
    assert re.search(r'id="backlog-failed">0<', page)  # no failure: not red
    failing_subscriber(home, 1)
    all_failed(home, 1)
    page = c.get("/ui/status").text
    assert re.search(r'<a href="/ui/deliveries\?status=failed"[^>]*id="backlog-failed" class="alarm">1</a>', page)
    # the chart: the last hour first, 24 hours on demand, the numbers as a table
    assert 'src="/ui/status/chart.svg?window=1h"' in page and 'id="window-24h"' in page
    rows = re.findall(r"<tr( class=\"failures\")?><td>\d\d:\d\d</td><td>\d\d:\d\d</td>"
                      r"<td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", page)
    assert len(rows) == 12 and sum(int(r[2]) for r in rows) == 1 and rows[0][0]  # newest first, red
    day = c.get("/ui/status?window=24h").text
    assert 'src="/ui/status/chart.svg?window=24h"' in day
    assert c.get("/ui/status/chart.svg?window=1h&format=json").json()["summary"]["failures"] == 1
    assert len(c.get("/ui/status/chart.svg?window=1h&format=json").json()["failures"]) == 60
    for path in ("/ui/status?window=7d", "/ui/status/chart.svg?window=2h"):
        r = c.get(path)
        assert r.status_code == 400 and "window must be one of 1h, 24h" in r.text


def test_keys_are_one_line_each_and_stay_text(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK", "--key", "NOTE")
    omb(home, "send", "task/change", json.dumps({"APPC": "KE1", "TASK": "T1", "NOTE": XSS}), "--force")
    page = login(srv).get("/ui/events").text
    key = re.search(r'<details class="key"><summary><code>(.*?)</code></summary><pre class="key">(.*?)</pre>',
                    page, re.S)
    assert key and "\n" not in key.group(1)
    assert json.loads(html.unescape(key.group(1))) == {"APPC": "KE1", "TASK": "T1", "NOTE": XSS}
    assert key.group(2).count("\n") == 4  # the expanded form, indented
    assert XSS not in page


def test_removing_a_topic_or_a_subscriber_asks_first(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    omb(home, "topic", "add", "spare/topic", "--key", "X")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    r = c.post("/ui/topics/remove", data={"csrf": csrf_of(c), "name": "spare/topic"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/topics/remove?name=spare/topic"
    question = c.get(r.headers["location"]).text
    assert "Remove the topic spare/topic?" in question
    assert "spare/topic" in omb(home, "topic", "list").stdout  # asked, not removed
    r = c.post("/ui/topics/remove", data={"csrf": form_token(question), "name": "spare/topic", "confirm": "yes"})
    assert flash_after(c, r) == "topic spare/topic removed"
    assert "spare/topic" not in omb(home, "topic", "list").stdout
    r = c.post(f"/ui/subscribers/{sid}/remove", data={"csrf": csrf_of(c)})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/subscribers/{sid}/remove"
    question = c.get(r.headers["location"]).text
    assert f"Remove subscriber {sid}?" in question
    assert omb(home, "subscriber", "show", sid).returncode == 0
    r = c.post(f"/ui/subscribers/{sid}/remove", data={"csrf": form_token(question), "confirm": "yes"})
    assert flash_after(c, r) == f"subscriber {sid} removed"
    assert omb(home, "subscriber", "show", sid, check=False).returncode != 0
    assert c.get("/ui/subscribers/999/remove").status_code == 404


def test_a_failed_login_keeps_the_user_name(home: Home, listening) -> None:
    srv = listening()
    with srv.client(auth=None, follow_redirects=False) as c:
        page = c.get("/ui/login?next=/ui/deliveries")
        r = c.post("/ui/login", data={"token": form_token(page.text, "token"), "user": USER + '"<x>',
                                      "password": "wrong-password", "next": "/ui/deliveries"})
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert f'name="user" autocomplete="username" required value="{USER}&#34;&lt;x&gt;"' in r.text
        assert 'name="next" value="/ui/deliveries"' in r.text
