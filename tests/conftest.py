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


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMBRIDGE_HOME", "OvDataDir", "OMBRIDGE_TEST_PLAN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A home in tmp_path holding a copy of the example script (tests/fixtures/example.pl)."""
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
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ombridge --home HOME ARGS`` as an operator types it (no ``--home`` when ``home`` is None):
    no OvDataDir or OMBRIDGE_HOME inherited from the tests, a wide terminal for tables, ``stdin``
    as its input (none by default), ``env`` added; with ``check``, exit status 0 is asserted."""
    home_args = [] if home is None else ["--home", str(home.root if isinstance(home, Home) else home)]
    environ = {k: v for k, v in os.environ.items() if k not in ("OvDataDir", "OMBRIDGE_HOME")}
    r = subprocess.run([OMBRIDGE, *home_args, *args], capture_output=True, text=True, timeout=timeout,
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
    """The home's event core (a real SQLite file in tmp_path)."""
    from bridge import store

    c = store.connect(home)
    yield c
    c.close()


def snapshot(conn) -> list[str]:
    """Everything stored, as SQL: equal snapshots mean nothing changed."""
    return list(conn.iterdump())


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
    if omb(home, "status", check=False).returncode == 0:
        omb(home, "stop", check=False)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
