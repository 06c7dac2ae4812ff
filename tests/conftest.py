"""Shared fixtures: a home in tmp_path with a real script, and paths to the fixture scripts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.home import Home

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The tests' own copy of the bundled example: operators edit conf/backsync/OMBackSync.pl (the
# repository doubles as a home), and the suite must not depend on what they wrote there.
EXAMPLE = FIXTURES / "example.pl"
SCRIPTED_HOST = FIXTURES / "hosts" / "scripted_host.pl"


# -- nothing the suite starts outlives it ------------------------------------------------------
# Every process a test starts inherits SUITE_MARK (set once, in the controller, before xdist
# starts its workers) and TEST_MARK (one value per test). A perl that sets $0 overwrites its
# environment in /proc, so a process also counts as the test's when it works (cwd) under the
# test's tmp_path: the perl host and what the script starts run in the home.
SUITE_MARK = "OMBRIDGE_TEST_SUITE"
TEST_MARK = "OMBRIDGE_TEST_NODE"
LEFTOVER_GRACE = 15.0  # a stop's grace period (10 s) and a perl orphan's check (1 s), with room


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(SUITE_MARK, f"{os.getpid()}-{time.time_ns()}")


def started_by(mark: bytes, under: Path | None, exclude: set[int] = frozenset()) -> dict[int, str]:
    """Live processes (not zombies) whose environment holds ``mark`` (``NAME=value``) or whose
    working directory is under ``under``: pid -> command line."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in exclude or int(entry.name) == os.getpid():
            continue
        try:
            if Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z":
                continue
            ours = mark in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            if not ours and under is not None:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
                ours = cwd == str(under) or cwd.startswith(str(under) + "/")
            if ours:
                found[int(entry.name)] = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    "utf-8", "replace").strip()
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def end_leftovers(mark: bytes, under: Path | None, grace: float, exclude: set[int] = frozenset()) -> dict[int, str]:
    """Wait up to ``grace`` seconds for what ``started_by`` finds to end; kill what is left (its
    process group too, when it has one of its own) and return it."""
    deadline = time.monotonic() + grace
    while (left := started_by(mark, under, exclude)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            group = os.getpgid(pid)
            if group != os.getpgid(0):
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return left


_TOKEN = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Mark what the test's body starts (session fixtures, set up before, stay unmarked)."""
    item.stash[_TOKEN] = os.environ[TEST_MARK] = f"{os.getpid()}-{time.time_ns()}"
    try:
        return (yield)
    finally:
        os.environ.pop(TEST_MARK, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the test's own finalizers: no process it started still runs. What does is killed,
    and the test errors, naming it."""
    result = yield
    token = item.stash.get(_TOKEN, None)
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if token is not None or tmp is not None:
        left = end_leftovers(f"{TEST_MARK}={token}".encode(), tmp, LEFTOVER_GRACE)
        if left:
            pytest.fail("the test left processes running (now killed): "
                        + "; ".join(f"{pid} {cmd}" for pid, cmd in left.items()), pytrace=False)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite's last word (in the controller under xdist, after its workers ended): no process
    it started is alive, whatever killed a test or a worker on the way."""
    if hasattr(session.config, "workerinput") or os.environ.get(SUITE_MARK, "").split("-")[0] != str(os.getpid()):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else None
    distributed = getattr(session.config.option, "dist", "no") != "no"  # the workers are our children
    workers = {int(e.name) for e in os.scandir("/proc")
               if distributed and e.name.isdigit() and _parent(int(e.name)) == os.getpid()}
    left = end_leftovers(f"{SUITE_MARK}={os.environ[SUITE_MARK]}".encode(), base, LEFTOVER_GRACE, workers)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("FAILED: the suite left processes running (now killed): "
                                + "; ".join(f"{pid} {cmd}" for pid, cmd in left.items()), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMBRIDGE_HOME", "OvDataDir", "OMBRIDGE_TEST_PLAN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def home(tmp_path: Path, store_kind: str) -> Home:
    """A home in tmp_path holding a copy of the example script (tests/fixtures/example.pl), whose
    event core is its SQLite file or a PostgreSQL database (``store_kind``, tests/conftest_pg.py)."""
    root = tmp_path / "home"
    (root / "conf" / "backsync").mkdir(parents=True)
    shutil.copy(EXAMPLE, root / "conf" / "backsync" / "OMBackSync.pl")
    os.chmod(root / "conf" / "backsync" / "OMBackSync.pl", 0o600)
    return Home(root)


@pytest.fixture
def use_script(home: Home) -> Callable[[str], Path]:
    """Install fixture script NAME (tests/fixtures/NAME.pl) as the home's OMBackSync.pl."""

    def install(name: str) -> Path:
        shutil.copy(FIXTURES / f"{name}.pl", home.script)
        os.chmod(home.script, 0o600)
        return home.script

    return install


OMBRIDGE = str(Path(sys.executable).parent / "ombridge")


def run_ombridge(home: Home | Path | None, *args: str, check: bool = True, timeout: float = 300,
                 stdin: str | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``ombridge --home HOME ARGS`` as an operator types it (no ``--home`` when ``home`` is None):
    no OvDataDir or OMBRIDGE_HOME inherited from the tests, a wide terminal for tables, ``stdin``
    as its input (none by default), ``env`` added, run through ``wrap`` (e.g. faketime) when
    given; with ``check``, exit status 0 is asserted."""
    home_args = [] if home is None else ["--home", str(home.root if isinstance(home, Home) else home)]
    environ = {k: v for k, v in os.environ.items() if k not in ("OvDataDir", "OMBRIDGE_HOME")}
    r = subprocess.run([*(wrap or []), OMBRIDGE, *home_args, *args], capture_output=True, text=True, timeout=timeout,
                       env={**environ, "COLUMNS": "200", **(env or {})}, input=stdin,
                       stdin=subprocess.DEVNULL if stdin is None else None, cwd=cwd)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def status(home: Home) -> dict:
    """``ombridge status --json`` (whatever its exit status)."""
    return json.loads(run_ombridge(home, "status", "--json", check=False).stdout)


def hex_lines(path: Path) -> list[str]:
    """The first column of a fixture's hex record file."""
    return [line.split()[0] for line in path.read_text().splitlines()]


@pytest.fixture
def conn(home: Home):
    """The home's event core (a real SQLite file in tmp_path, or a PostgreSQL database: ``store_kind``)."""
    from bridge import store

    c = store.connect(home)
    yield c
    c.close()


def snapshot(conn) -> list[str]:
    """Everything stored, as SQL (SQLite) or rows (PostgreSQL): equal snapshots mean nothing changed."""
    if hasattr(conn, "iterdump"):
        return list(conn.iterdump())
    tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = current_schema() ORDER BY 1")]
    return [f"{t}: {tuple(r)!r}" for t in tables for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def listening(home: Home) -> Iterator[Callable[..., Any]]:
    """Call with ``start`` options to start a supervisor listening on 127.0.0.1 (a free port);
    a user omi/PASSWORD exists. Always stopped (or killed) afterwards."""
    from web_support import PASSWORD, USER, Listening, omb

    pids: list[int] = []
    omb(home, "user", "add", USER, stdin=PASSWORD + "\n")

    def start(*options: str, verify: object = False) -> Any:
        opts = options if any(o.startswith("--listen") for o in options) else ("--listen", "127.0.0.1:0", *options)
        r = omb(home, "start", *opts)
        assert "listening on" in r.stdout, r.stdout
        st = status(home)
        pids.append(st["supervisor"]["pid"])
        return Listening(home, st, verify)

    yield start
    stop_quietly(home, pids)


def stop_quietly(home: Home, pids: list[int]) -> None:
    """A finalizer's stop: whatever state the home's supervisor is in (starting, stuck, already
    gone), stop it, then kill it and ``pids`` if they still run. Never raises, even when a command
    times out on a busy machine, so the kill always comes."""
    try:
        r = run_ombridge(home, "status", "--json", check=False, timeout=60)
        pid = json.loads(r.stdout or "{}").get("supervisor", {}).get("pid")
        if pid:
            pids = [*pids, int(pid)]  # started, but the test did not get to record it
        if r.returncode != 3:
            run_ombridge(home, "stop", check=False, timeout=150)
    except (subprocess.TimeoutExpired, ValueError, AttributeError):
        pass
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# The real PostgreSQL server of the store tests (tests/pg/), started once per worker when used.
from conftest_pg import pg_conn, pg_db, pg_server, pytest_generate_tests, store_kind  # noqa: E402,F401 - by name
