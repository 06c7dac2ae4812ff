"""Issue 32: during an outage of the event core every console page keeps the console's layout and
says why, since when and what still works; the status page keeps answering from the supervisor's
memory, and a logged-in browser stays logged in. A real supervisor and listener on the suite's
real PostgreSQL server, stopped and started again."""

from __future__ import annotations

import html
import time

import pytest
from conftest import wait_for
from console_support import login
from pg_support import PgServer

from bridge.errors import StoreError
from bridge.home import Home
from bridge.store import pgstore

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


def test_a_page_after_a_long_outage_does_not_wait_out_the_pools_backoff(pg_server: PgServer, pg_db: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool of the console's connections tries again with a backoff that doubles, both to keep
    # its one connection and to grow for requests that wait: after a long outage its next try may
    # be a minute away although the server answers again (the two-node test's console once got a
    # 503 so). The long backoff is set here at once, a fake for minutes of outage.
    from psycopg_pool import base

    monkeypatch.setattr(base.AttemptWithBackoff, "INITIAL_DELAY", 60.0)
    for name, value in pg_server.env().items():
        monkeypatch.setenv(name, value)
    lender = pgstore.Lender(pg_server.url(pg_db), "test")
    try:
        with lender.lend() as conn:
            conn.execute("SELECT 1")
        pg_server.halt()
        try:
            for _ in range(2):  # (a page and /metrics, say: the second one waits, and the pool grows)
                with pytest.raises(StoreError, match="unreachable"), lender.lend() as conn:
                    conn.execute("SELECT 1")
        finally:
            pg_server.resume()
        started = time.monotonic()
        with lender.lend() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert time.monotonic() - started < 15  # a new pool, not the old one's next try in 60 s
        with lender.lend() as conn:  # and the new pool serves the next request at once
            assert conn.execute("SELECT 2").fetchone()[0] == 2
    finally:
        lender.close()
