"""Issue 30: the sync back kept a thread-local connection that never reconnected: after a
PostgreSQL restart, `omi close` never reached the gateway until the supervisor was restarted.
A real supervisor and listener on a real PostgreSQL server, the stand-in gateway."""

from __future__ import annotations

import pytest
from conftest import wait_for
from omi_gateway import Gateway
from pg_support import PgServer
from test_omi_sync_safety import gateway, synced  # noqa: F401  (the fixtures, on PostgreSQL here)
from web_support import omb

from bridge.home import Home

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_the_sync_back_reaches_omi_after_the_database_restarted(home: Home, store_kind: str, synced,
                                                                 gateway: Gateway, pg_server: PgServer) -> None:
    omb(home, "omi", "close", "INC-1")
    wait_for(lambda: len(gateway.posts()) == 1, what="the first close reached the gateway")
    pg_server.halt()
    pg_server.resume()
    # the Event Manager's and the sync back's connections all died with the server
    omb(home, "omi", "close", "INC-2")
    wait_for(lambda: len(gateway.posts()) == 2, timeout=60, what="the close after the restart reached OMi")
    wait_for(lambda: omb(home, "status", check=False).returncode == 0, timeout=30,
             what="status healthy again (each service answered once)")
