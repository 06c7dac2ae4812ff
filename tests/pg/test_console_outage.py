"""Issue 32: during an outage of the event core every console page keeps the console's layout and
says why, since when and what still works; the status page keeps answering from the supervisor's
memory, and a logged-in browser stays logged in. A real supervisor and listener on the suite's
real PostgreSQL server, stopped and started again."""

from __future__ import annotations

import html

import pytest
from conftest import wait_for
from console_support import login
from pg_support import PgServer

from bridge.home import Home

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder
HTML = {"accept": "text/html"}


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_every_page_says_the_outage_in_the_consoles_layout(home: Home, store_kind: str, listening,
                                                           pg_server: PgServer) -> None:
    srv = listening()
    c = login(srv)
    assert c.get("/ui/events", headers=HTML).status_code == 200
    pg_server.halt()
    try:
        r = c.get("/ui/events", headers=HTML)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        text = html.unescape(r.text)
        assert "<nav>" in r.text and "Log out" in r.text  # still logged in, with the navigation
        assert "The event core cannot be reached" in text and "since" in text
        assert "OMi is answered 503" in text and 'id="outage-reason"' in r.text
        for path in ("/ui/deliveries", "/ui/topics", "/ui/subscribers/1", "/ui/deliveries/1"):
            page = c.get(path, headers=HTML)
            assert page.status_code == 503 and 'id="outage"' in page.text, path
        status = c.get("/ui/status", headers=HTML)  # the supervisor's own view, with the outage on top
        assert status.status_code == 200 and 'id="outage"' in status.text and 'id="no-chart"' in status.text
        twin = c.get("/ui/status?format=json").json()
        assert twin["outage"]["since"] and twin["status"]["supervisor"]["state"] == "running"
        assert any("cannot be read" in d for d in twin["status"]["degraded"])
        assert c.get("/ui/events").text.count("\n") == 1  # curl: one line, as before
        with srv.client(auth=None, follow_redirects=False) as anon:
            anon.cookies.set("ombridge_session", "not-a-session", path="/ui")
            stranger = anon.get("/ui/events", headers=HTML)
            assert stranger.status_code == 503 and "Log out" not in stranger.text
            assert 'id="outage-reason"' not in stranger.text  # (the reason names the database: users only)
    finally:
        pg_server.resume()
    wait_for(lambda: c.get("/ui/events", headers=HTML).status_code == 200, timeout=60, what="the pages back")
    assert c.get("/ui/status?format=json").json()["outage"] is None
