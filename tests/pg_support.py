"""A real PostgreSQL server for the tests: Debian's, started in a temporary directory.

:class:`PgServer` runs ``initdb`` and ``pg_ctl`` of the newest PostgreSQL under
``/usr/lib/postgresql/*/bin`` (``make test`` installs it with apt when missing) in a directory of its
own, listening on 127.0.0.1 on a free port and on a unix socket in that directory only. When the
suite runs as root, the server runs as the ``postgres`` system user (PostgreSQL refuses root).

Two roles: the superuser ``postgres`` reaches the server through the unix socket only (``trust``:
only the owner of the directory can open it), to create and drop databases; ``ombridge``, an
ordinary role that may create databases, is what ombridge itself uses, over TCP with a
scram-sha-256 password that lives only in a ``.pgpass`` file of mode 0600 (``PGPASSFILE`` in
:meth:`PgServer.env`), never on a command line — libpq's own mechanism, as in production.

For speed the test server runs with ``fsync = off`` (and ``initdb --no-sync``): a power cut could
lose its data, which is thrown away after the run anyway. Nothing about durability is measured here.
:meth:`PgServer.stop` stops it and removes the directory; it is idempotent and registered with
``atexit`` too, so a failing or interrupted run leaves no server behind.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

ROLE = "ombridge"
ADMIN = "postgres"
START_TIMEOUT = 60.0


class PgUnavailable(RuntimeError):
    """The PostgreSQL server cannot be run on this machine (not installed, no user for it)."""


def bindir() -> str:
    """The ``bin`` folder of the newest PostgreSQL installed by Debian's packages."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise PgUnavailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                            "`make postgresql` installs Debian's package")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.split("/")[4]))

    return os.path.dirname(max(found, key=version))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throw-away PostgreSQL server (see the module docstring)."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable  # production's settings (fsync, full pages, synchronous commits) or a throw-away's
        self.bin = bindir()
        self.runs_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.runs_as = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("the suite runs as root and there is no `postgres` user to run the "
                                    "server as (Debian's postgresql package creates it)") from None
        self.dir = tempfile.mkdtemp(prefix="ombridge-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.passfile = os.path.join(self.dir, "pgpass")  # the client's: owned by the suite's user
        self.port = 0
        self.pid: int | None = None
        self._databases = 0
        self._stopped = False
        atexit.register(self.stop)

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> PgServer:
        """initdb, start, create the ``ombridge`` role; returns self. Stops and cleans up on failure."""
        try:
            if self.runs_as is not None:
                os.chown(self.dir, self.runs_as.pw_uid, self.runs_as.pw_gid)
            self._server_cmd([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", ADMIN, "-E", "UTF8",
                              "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256"])
            for attempt in range(3):  # another process may take the free port before the server does
                self.port = free_port()
                self._configure()
                try:
                    self._server_cmd([os.path.join(self.bin, "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT)),
                                      "-D", self.data, "-l", self.log])
                    break
                except PgUnavailable:
                    if attempt == 2 or "in use" not in self.server_log():
                        raise
            self.pid = self._postmaster_pid()
            self._create_role()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate, then SIGKILL) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                for mode in ("fast", "immediate"):
                    try:
                        self._server_cmd([os.path.join(self.bin, "pg_ctl"), "stop", "-w", "-t", "30", "-m", mode,
                                          "-D", self.data])
                        break
                    except PgUnavailable:
                        continue
                else:
                    if self.pid:
                        os.kill(self.pid, 9)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            atexit.unregister(self.stop)

    def halt(self) -> None:
        """Stop the server as a planned restart does (``pg_ctl stop -m fast``: sessions ended,
        what was committed kept); :meth:`resume` starts it again on the same port and data."""
        self._server_cmd([os.path.join(self.bin, "pg_ctl"), "stop", "-w", "-t", "30", "-m", "fast", "-D", self.data])

    def resume(self) -> None:
        """Start the server :meth:`halt` stopped."""
        self._server_cmd([os.path.join(self.bin, "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT)),
                          "-D", self.data, "-l", self.log])
        self.pid = self._postmaster_pid()

    # -- connecting -----------------------------------------------------------------------------

    @property
    def socket_dir(self) -> str:
        """Where the server's unix socket is (a libpq ``host``)."""
        return self.dir

    def url(self, dbname: str = ROLE) -> str:
        """A libpq URL for the ``ombridge`` role over TCP; the password comes from :meth:`env`'s file."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    def env(self) -> dict[str, str]:
        """The environment a client (this process or a child) needs to log in: ``PGPASSFILE``."""
        return {"PGPASSFILE": self.passfile}

    def connect(self, dbname: str = ROLE, **options: Any) -> Any:
        """A psycopg connection as the ``ombridge`` role over TCP (password from the .pgpass file)."""
        import psycopg

        return psycopg.connect(self.url(dbname), passfile=self.passfile, **options)

    def admin(self, dbname: str = "postgres") -> Any:
        """A psycopg connection as the superuser, through the unix socket, in autocommit mode."""
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user=ADMIN, dbname=dbname, autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by the ``ombridge`` role; returns its name."""
        from psycopg import sql

        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def durability(self) -> str:
        """The server's fsync, synchronous_commit and full_page_writes, as a table shows them."""
        with self.admin() as conn:
            return ", ".join(f"{name} {conn.execute(f'SHOW {name}').fetchone()[0]}"
                             for name in ("fsync", "synchronous_commit", "full_page_writes"))

    def server_log(self) -> str:
        """What the server wrote to its log so far ('' when there is none)."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- inside ---------------------------------------------------------------------------------

    def _server_cmd(self, argv: list[str]) -> None:
        # As the postgres user when we are root: PostgreSQL refuses to run as root.
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": self.dir, "TZ": "UTC"}
        user = self.runs_as
        proc = subprocess.run(argv, env=env, cwd=self.dir, capture_output=True, text=True, timeout=START_TIMEOUT + 30,
                              user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                              extra_groups=[] if user else None)
        if proc.returncode != 0:
            raise PgUnavailable(f"{os.path.basename(argv[0])} {argv[1] if len(argv) > 1 else ''} failed "
                                f"({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n"
                                f"{self.server_log()[-2000:]}")

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.dir}'",
            # a throw-away server's, unless asked for production's (the bench: bench/bench_pg.py)
            **({} if self.durable else {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}),
            "shared_buffers": "32MB", "max_connections": "100", "log_min_messages": "warning",
        }
        conf = os.path.join(self.data, "postgresql.auto.conf")  # ALTER SYSTEM's file: read last, wins
        with open(conf, "w", encoding="utf-8") as f:
            f.writelines(f"{name} = {value}\n" for name, value in settings.items())
        if self.runs_as is not None:
            os.chown(conf, self.runs_as.pw_uid, self.runs_as.pw_gid)

    def _postmaster_pid(self) -> int:
        with open(os.path.join(self.data, "postmaster.pid"), encoding="ascii") as f:
            return int(f.readline())

    def _create_role(self) -> None:
        from psycopg import sql

        password = secrets.token_urlsafe(24)  # letters, digits, - and _: nothing to escape in .pgpass
        fd = os.open(self.passfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"127.0.0.1:{self.port}:*:{ROLE}:{password}\n")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(password)))
            conn.execute(sql.SQL("CREATE DATABASE {0} OWNER {0}").format(sql.Identifier(ROLE)))  # its default


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends and workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    """True once none of ``pids`` is alive (polled until ``timeout``)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
