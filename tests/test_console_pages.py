"""Issue 32's console over plain HTTP against a real supervisor: deliveries a page at a time as
deep as the data goes, errors as pages of the console for a browser (one line for curl), the
status page's figures and tables in its JSON twin (what the live refresh puts in place)."""

from __future__ import annotations

import html
import re

import pytest
from console_support import login
from web_support import omb

from bridge import store
from bridge.eventcore import builtins, catalog, events
from bridge.home import Home
from bridge.model import ActionKind
from bridge.web.console import statusview

HTML = {"accept": "text/html,application/xhtml+xml"}


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="delivery-(\d+)"', page)]


def test_deliveries_page_older_and_newer_as_deep_as_the_data_goes(home: Home, listening) -> None:
    srv = listening()
    conn = store.connect(home)
    catalog.add_topic(conn, "task/change", ["N"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true", description="parked")
    other = catalog.add_subscriber(conn, ActionKind.COMMAND, "true", description="other")
    catalog.attach_topic(conn, sid, "task/change")
    catalog.attach_topic(conn, other, "task/change")
    events.send_many(conn, [("task/change", {"N": n}) for n in range(1_300)], force=True)
    conn.close()
    c = login(srv)
    mine = sorted((r["id"] for r in c.get(f"/ui/deliveries?subscriber={sid}&limit=1000&format=json").json()
                   ["deliveries"]), reverse=True)
    assert len(mine) == 1000  # the newest thousand; then a page beyond them
    seen, path = [], f"/ui/deliveries?subscriber={sid}"
    while path:
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        seen += _ids(r.text)
        older = re.search(r'id="older" href="([^"]+)"', r.text)
        path = older.group(1).replace("&amp;", "&") if older else None
    assert len(seen) == 1_300 and seen == sorted(seen, reverse=True)  # every one, once, newest first
    assert seen[:1000] == mine
    # back up from the oldest page: the newer pages hold what was shown before, in the same order
    last = c.get(f"/ui/deliveries?subscriber={sid}&before={seen[1000]}&limit=50")
    assert _ids(last.text) == seen[1001:1051]
    newer = re.search(r'id="newer" href="([^"]+)"', last.text).group(1).replace("&amp;", "&")
    assert f"subscriber={sid}" in newer and "limit=50" in newer
    assert _ids(c.get(newer).text) == seen[951:1001]
    top = c.get(f"/ui/deliveries?subscriber={sid}&after={seen[50]}")
    assert _ids(top.text) == seen[:50] and 'id="newer"' not in top.text  # the newest page has none above
    twin = c.get(f"/ui/deliveries?subscriber={sid}&before={seen[-5]}&format=json").json()
    assert [d["id"] for d in twin["deliveries"]] == seen[-4:] and twin["older"] is None


def test_errors_are_console_pages_for_a_browser_and_one_line_for_curl(home: Home, listening) -> None:
    srv = listening()
    c = login(srv)
    for path, code, said in (("/ui/deliveries/999", 404, "no delivery 999"), ("/ui/nowhere", 404, "no page /ui/nowhere"),
                             ("/ui/deliveries?status=bogus", 400, "bad status 'bogus'"),
                             ("/ui/subscribers/x", 404, "no such subscriber id")):
        r = c.get(path, headers=HTML)
        assert r.status_code == code and r.headers["content-type"].startswith("text/html"), path
        assert '<nav>' in r.text and 'href="/ui/deliveries"' in r.text and "Log out" in r.text, path
        assert said in html.unescape(r.text), (path, r.text)
        plain = c.get(path)
        assert plain.status_code == code and plain.text.count("\n") == 1 and said in plain.text, path
        assert c.get(path + ("&" if "?" in path else "?") + "format=json").json()["error"].startswith(said[:6])
    assert c.get("/ui/nowhere", headers=HTML, follow_redirects=False).status_code == 404
    with srv.client(auth=None, follow_redirects=False) as anon:  # a stranger still meets the login first
        assert anon.get("/ui/nowhere", headers=HTML).status_code == 303
    assert c.get("/ui/deliveries/1/retry").status_code == 405  # (an action's path: only POST)


def test_the_status_twin_carries_the_headline_and_every_table(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "N")
    sid = omb(home, "subscriber", "add", "--command", "exit 3", "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    omb(home, "send", "task/change", '{"N": 1}')
    c = login(srv)
    from conftest import wait_for
    wait_for(lambda: c.get("/ui/status?format=json").json()["view"]["headline"]["dead"] == 1, what="the failure")
    view = c.get("/ui/status?format=json").json()["view"]
    assert view["headline"]["failed"] == 1 and view["headline"]["enqueued"] == 0
    assert {r["cells"][0]["text"] for r in view["tables"]["lanes"]["rows"]} >= {"backsync", "actions-0"}
    (child,) = view["tables"]["children"]["rows"]  # one perl child: the host's own fields
    assert [x["text"] for x in child["cells"][:3]] == ["1", str(srv.status["ombacksync"]["pid"]), "running"]
    (row,) = view["tables"]["backlog"]["rows"]
    assert row["cells"][2] == {"text": "1", "href": f"/ui/deliveries?status=failed&subscriber={sid}", "alarm": True}
    assert view["tables"]["nodes"]["shown"] is False  # one node: no table of nodes
    page = c.get("/ui/status").text
    assert 'data-table="children"' in page and 'data-view="headline.dead"' in page


def test_several_children_are_a_row_each_and_system_subscribers_go_by_name() -> None:
    st = {"ombacksync": {"state": "running", "pid": 10, "children": [
        {"index": 1, "pid": 11, "state": "running", "closes": 7, "current": {"id": "EVT-<b>", "since": 100.0}},
        {"index": 2, "pid": 12, "state": "backoff", "closes": 0, "current": None}]}}
    rows = statusview.children(st, now=130.0)["rows"]
    assert [[c["text"] for c in r["cells"]] for r in rows] == [["1", "11", "running", "7", "EVT-<b> (for 30 s)"],
                                                               ["2", "12", "backoff", "0", ""]]
    assert rows[1]["cells"][2].get("alarm") and not rows[0]["cells"][2].get("alarm")
    system = {"system": 1, "action": ActionKind.BACKSYNC.value, "description": builtins.BACKSYNC.description}
    assert builtins.display_name(system) == "ombacksync"
    assert builtins.display_name({"system": 0, "action": "command", "description": "", "target": "true"}) == "true"


def test_buttons_only_where_they_do_something_and_start_names_the_console(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "N")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    c = login(srv)
    assert "Purge open" not in c.get(f"/ui/subscribers/{sid}").text  # nothing open: no purge offered
    purge = c.get(f"/ui/subscribers/{sid}/purge").text
    assert 'id="nothing-to-purge"' in purge and 'id="confirm-purge"' not in purge
    assert "Purge open deliveries of subscriber" not in c.get(f"/ui/deliveries?subscriber={sid}").text
    topics = c.get("/ui/topics").text
    for system in builtins.SEED_TOPICS:  # a system subscriber's topic cannot be removed: not offered
        assert f"remove?name={system}\"" not in topics
    assert 'remove?name=task/change"' in topics
    assert 'class="flash' not in topics
    omb(home, "stop")
    started = omb(home, "start", "--listen", "127.0.0.1:0").stdout
    try:
        url = re.search(r"listening on (\S+)", started).group(1)
        assert f"console: {url}/ui/" in started
    finally:
        omb(home, "stop")


def test_through_an_outage_a_session_is_kept_only_if_confirmed_just_before_it() -> None:
    import asyncio

    from bridge.errors import StoreError
    from bridge.web.console.session import KNOWN_GRACE, Sessions

    clock, down = [1000.0], [False]

    async def core(fn, digest, at):  # the console_sessions table, as session_user reads it
        if down[0]:
            raise StoreError("the event core cannot be reached")
        return {"recent": ("alice", 5000.0), "old": ("bob", 5000.0)}.get(digest)

    sessions = Sessions(None, core, clock=lambda: clock[0])  # type: ignore[arg-type]

    def who(digest: str) -> str | None:
        return asyncio.run(sessions._session_user(digest))

    assert who("old") == "bob"
    clock[0] += KNOWN_GRACE + 60
    assert who("recent") == "alice" and who("unknown") is None
    down[0], clock[0] = True, clock[0] + 30
    assert who("recent") == "alice"  # confirmed 30 s before the outage: still in
    for digest in ("old", "unknown"):  # confirmed too long before, or never: the outage is said
        with pytest.raises(StoreError):
            who(digest)
    clock[0] = 5001.0
    with pytest.raises(StoreError):
        who("recent")  # expired meanwhile
