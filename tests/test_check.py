"""The one-shot `perl -c` check: fast unit tests with faked processes (pytest-subprocess) for
what depends only on exit status, output and timing, beside real-perl tests of the same paths.

Why only here: the persistent child and the command/program actions read real descriptors
(selectors, os.read) and kill real process groups; pytest-subprocess's fake processes have
neither (docs/decisions.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE
from pytest_subprocess import FakeProcess

from bridge.errors import BridgeError, ScriptSyntaxError
from bridge.home import Home
from bridge.ombacksync import integrations
from bridge.ombacksync.perlenv import HostSettings, check_command
from bridge.ombacksync.perlhost import HostState, PerlHost, check_syntax


def perl_c(script: Path) -> list[str]:
    """The command line the check must run: the child's switches and @INC (docs/compatibility.md)."""
    return check_command(script, HostSettings())


def test_a_script_that_compiles_gives_perls_text_and_runs_with_the_homes_environment(
    home: Home, fp: FakeProcess
) -> None:
    recorder = fp.register(perl_c(home.script), stdout=f"{home.script} syntax OK\n")
    assert check_syntax(home.script, home) == f"{home.script} syntax OK\n"
    (call,) = recorder.calls
    assert call.kwargs["env"]["OvDataDir"] == str(home.root)
    assert call.kwargs["stderr"] == subprocess.STDOUT and call.kwargs["stdin"] == subprocess.DEVNULL


def test_a_failing_check_carries_perls_message_verbatim(home: Home, fp: FakeProcess) -> None:
    message = b"syntax error at OMBackSync.pl line 6, near \"}\"\n\xffOMBackSync.pl had compilation errors.\n"
    fp.register(perl_c(home.script), stdout=message, returncode=255)
    with pytest.raises(ScriptSyntaxError) as info:
        check_syntax(home.script, home)
    assert info.value.message == message.decode("utf-8", "backslashreplace").strip()


def test_a_check_that_fails_without_a_word_still_says_why(home: Home, fp: FakeProcess) -> None:
    fp.register(perl_c(home.script), returncode=-9)
    with pytest.raises(ScriptSyntaxError, match="perl -c ended with status -9, saying nothing"):
        check_syntax(home.script, home)


def test_a_check_that_outlives_its_timeout_is_killed_and_refused(home: Home, fp: FakeProcess) -> None:
    def hangs(process: object) -> None:
        raise subprocess.TimeoutExpired(perl_c(home.script), 2.5)  # what communicate() raises at the deadline

    recorder = fp.register(perl_c(home.script), callback=hangs)
    with pytest.raises(ScriptSyntaxError, match=r"perl -c did not finish within 2\.5s"):
        check_syntax(home.script, home, timeout=2.5)
    assert recorder.calls[0].received_signals() == (signal.SIGKILL,)


def test_a_perl_that_cannot_start_is_one_clear_error(home: Home, fp: FakeProcess) -> None:
    def missing(process: object) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    fp.register(["/opt/perl/bin/perl", fp.any()], callback=missing)
    with pytest.raises(BridgeError, match="^perl not found: /opt/perl/bin/perl$"):
        check_syntax(home.script, home, HostSettings(perl="/opt/perl/bin/perl"))


def test_a_refused_check_never_starts_a_child(home: Home, fp: FakeProcess) -> None:
    fp.register(perl_c(home.script), stdout="Missing right curly at line 3\n", returncode=255)
    host = PerlHost(home)  # any other process (the child) would be refused by fp as not registered
    with pytest.raises(ScriptSyntaxError):
        host.start()
    assert host.state is HostState.SYNTAX_ERROR and host.last_error == "Missing right curly at line 3"
    assert len(fp.calls) == 1


def test_a_merge_refused_by_perl_c_leaves_the_script_as_it_was(
    home: Home, fp: FakeProcess, tmp_path: Path
) -> None:
    before = home.script.read_bytes()
    vendor = tmp_path / "vendor.pl"
    vendor.write_bytes(EXAMPLE.read_bytes())
    # The merge is checked in a temporary file beside the script; perl names that file.
    fp.register([*perl_c(home.script)[:-1], fp.any(min=1, max=1)], returncode=255,
                stdout=f"syntax error at {home.script.parent}/.OMBackSync.x.pl line 9\n")
    with pytest.raises(ScriptSyntaxError, match="syntax error at"):
        integrations.add(home, "vendor-a", vendor)
    assert home.script.read_bytes() == before
    assert sorted(p.name for p in home.script.parent.iterdir()) == ["OMBackSync.pl"]  # no temporary left


# -- the same paths with real perl ---------------------------------------------------------------

def test_real_perl_a_begin_block_that_waits_is_killed_at_the_timeout(home: Home) -> None:
    home.script.write_text("BEGIN { sleep 600 } sub OMBackSync { 1 } 1;\n")
    started = time.monotonic()
    with pytest.raises(ScriptSyntaxError, match=r"did not finish within 0\.5s"):
        check_syntax(home.script, home, timeout=0.5)
    assert time.monotonic() - started < 60  # killed, not waited for (generous: a busy machine)
    assert not _perl_c_running(home.script)


def test_real_perl_that_cannot_start(home: Home) -> None:
    with pytest.raises(BridgeError, match="^perl not found: /nonexistent/perl$"):
        check_syntax(home.script, home, HostSettings(perl="/nonexistent/perl"))


def _perl_c_running(script: Path) -> bool:
    needle = str(script).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline and b"-c" in cmdline.split(b"\0") and entry.name != str(os.getpid()):
                return True
    return False
