"""The test suite's PostgreSQL server (tests/pg_support.py): reachable with psycopg 3 as an
ordinary role whose password only a .pgpass file holds, and gone without a trace once stopped."""

from __future__ import annotations

import os
import stat

import psycopg
import pytest
from pg_support import ROLE, PgServer, alive, children, wait_gone

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder


def test_the_server_is_reachable_as_an_ordinary_role_with_a_password_from_pgpass(pg_server, pg_db):
    with pg_server.connect(pg_db) as conn:
        user, superuser, listen, fsync = conn.execute(
            "SELECT current_user, rolsuper, current_setting('listen_addresses'), current_setting('fsync') "
            "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert (user, superuser, listen, fsync) == (ROLE, False, "127.0.0.1", "off")
        assert conn.info.host == "127.0.0.1" and conn.info.port == pg_server.port
    # The password is in an owner-only .pgpass, never on a command line or in the URL.
    assert stat.S_IMODE(os.stat(pg_server.passfile).st_mode) == 0o600
    assert "@127.0.0.1:" in pg_server.url() and ":" not in pg_server.url().split("//")[1].split("@")[0]
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_server.url(pg_db), passfile=os.devnull, connect_timeout=10).close()
    password = open(pg_server.passfile, encoding="ascii").read().strip().rsplit(":", 1)[1]
    for pid in [pg_server.pid, *children(pg_server.pid)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert password.encode() not in f.read()
        except FileNotFoundError:  # a backend of another test's session ended meanwhile
            continue


def test_the_server_runs_unprivileged_when_the_suite_is_root(pg_server):
    with open(f"/proc/{pg_server.pid}/status", encoding="ascii") as f:
        uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
    assert uid != 0
    if os.geteuid() == 0:
        import pwd

        assert uid == pwd.getpwnam("postgres").pw_uid


def test_stop_leaves_no_process_and_no_directory():
    server = PgServer().start()
    conn = server.connect(autocommit=True)  # a backend process, too, still connected at the stop
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        processes = [server.pid, *children(server.pid)]
        # (a worker may end between the listing and the look, under load: the postmaster and one
        # child alive is what the stop below must end)
        assert alive(server.pid) and any(alive(p) for p in processes[1:])
        server.stop()
    finally:
        conn.close()
    assert wait_gone(processes), [p for p in processes if alive(p)]
    assert not os.path.exists(server.dir)
    server.stop()  # a second stop (the atexit hook after the finalizer) is harmless
