"""Issue 30: the sync back kept a thread-local connection that never reconnected: after a
PostgreSQL restart, `omi close` never reached the gateway until the supervisor was restarted.
A real supervisor and listener on a real PostgreSQL server, the stand-in gateway."""

from __future__ import annotations

import pytest
from conftest import wait_for
from omi_gateway import GW_PASSWORD, Gateway, configure
from pg_support import PgServer
from test_omi_sync import event_list, event_xml
from web_support import XML, install, omb

from bridge.home import Home

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_the_sync_back_reaches_omi_after_the_database_restarted(home: Home, store_kind: str, listening,
                                                                 pg_server: PgServer) -> None:
    gateway = Gateway().start()
    try:
        configure(home.root, gateway.url)
        omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
        install(home, "recorder")
        srv = listening()
        with srv.client() as http:
            r = http.post("/omi/event", content=event_list(event_xml("omi-1", 1, original_id="INC-1"),
                                                           event_xml("omi-2", 2, original_id="INC-2")), headers=XML)
            assert r.status_code == 200, r.text
        omb(home, "omi", "close", "INC-1")
        wait_for(lambda: len(gateway.posts()) == 1, what="the first close reached the gateway")
        pg_server.halt()
        pg_server.resume()
        # the Event Manager's and the sync back's connections all died with the server
        omb(home, "omi", "close", "INC-2")
        wait_for(lambda: len(gateway.posts()) == 2, timeout=60, what="the close after the restart reached OMi")
        wait_for(lambda: omb(home, "status", check=False).returncode == 0, timeout=30,
                 what="status healthy again (each service answered once)")
    finally:
        gateway.stop()
