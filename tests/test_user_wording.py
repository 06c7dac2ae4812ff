"""Issue 22, item 7 (first half): ``user add`` of a name that exists (and ``user passwd`` of one
that does not) says so before a password is typed at the terminal for nothing."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest
from conftest import OMBRIDGE
from conftest import run_ombridge as omb

from bridge.home import Home


def at_a_terminal(home: Home, *args: str, timeout: float = 30) -> tuple[int | None, str]:
    """Run ``ombridge --home HOME ARGS`` on a pseudo-terminal, typing nothing: (exit status, or
    None when it still waits for input after ``timeout``; what it wrote)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([OMBRIDGE, "--home", str(home.root), *args], stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "COLUMNS": "200"}, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if b"Password" in out:
                break  # it asks: that is the answer
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        if b"Password" not in out:  # it did not ask: it ends (the terminal may have closed first)
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        status = proc.poll()
        if status is not None:  # what it wrote before it ended
            while select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        return status, out.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


@pytest.fixture
def existing(home: Home) -> Home:
    omb(home, "user", "add", "omi", stdin="a long enough passphrase\n")
    return home


def test_user_add_of_an_existing_name_says_so_before_asking_for_a_password(existing: Home) -> None:
    status, out = at_a_terminal(existing, "user", "add", "omi")
    assert "Password" not in out
    assert status not in (None, 0) and "user omi exists (change the password with: ombridge user passwd omi)" in out


def test_user_passwd_of_a_missing_name_says_so_before_asking_for_a_password(existing: Home) -> None:
    status, out = at_a_terminal(existing, "user", "passwd", "nobody")
    assert "Password" not in out
    assert status not in (None, 0) and "no user nobody" in out


def test_a_new_name_is_asked_for_its_password(existing: Home) -> None:
    status, out = at_a_terminal(existing, "user", "add", "other")
    assert status is None and "Password" in out  # waits for the operator to type it
