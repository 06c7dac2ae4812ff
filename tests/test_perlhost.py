"""PerlHost against real perl: the bundled example, byte-exact IDs, and every script fault."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, alive, hex_lines, wait_for

from bridge.errors import PerlStartError, ScriptSyntaxError
from bridge.home import Home
from bridge.ombacksync.perlhost import Backoff, HostState, PerlHost

HOSTILE_IDS = [
    "EVT-1",
    "with spaces  and  more",
    "quote's \"double\" `back`",
    "ünïcødé ✓ 事件",
    "100% %0A %25 %",
    "cr\rlf\nboth\r\n",
    "tab\tnul\x00del\x7f",
    "$(reboot); rm -rf ~ '",
    " leading and trailing ",
    "x" * 10000,
]


def test_bundled_example_writes_its_lines(home: Home) -> None:
    with PerlHost(home) as host:
        host.start()
        assert host.state is HostState.RUNNING
        outcomes = host.close_many(["EVT-1", "EVT 2"])
    assert [o.ok for o in outcomes] == [True, True]
    lines = home.output.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"{stamp} Init", lines[0])
    assert re.fullmatch(rf"{stamp} Close EVT-1", lines[1])
    assert re.fullmatch(rf"{stamp} Close EVT 2", lines[2])
    assert host.state is HostState.STOPPED


def test_ids_reach_the_script_byte_identical(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("third_party")
    raw_invalid_utf8 = b"\xff\xfe raw bytes"
    ids: list[str | bytes] = [*HOSTILE_IDS, raw_invalid_utf8]
    with PerlHost(home) as host:
        outcomes = host.close_many(ids)
    assert all(o.ok for o in outcomes), outcomes
    expected = [(i if isinstance(i, bytes) else i.encode()).hex() for i in ids]
    assert hex_lines(home.tmp / "closed.hex") == expected


def test_third_party_script_die_and_exit_do_not_stop_the_others(
    home: Home, use_script: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    use_script("third_party")
    caplog.set_level(logging.INFO, logger="ombridge.script")
    with PerlHost(home) as host:
        host.start()
        pid = host.pid
        outcomes = host.close_many(["T-1", "die-2", "T-3", "exit-4", "T-5"])
        assert host.pid == pid and host.restarts == 0  # exit was trapped: same child
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert outcomes[1].error == "ticket system refused die-2"
    assert outcomes[3].error == "OMBackSync called exit(3)"
    records = (home.tmp / "closed.hex").read_text().splitlines()
    assert [bytes.fromhex(r.split()[0]).decode() for r in records] == ["T-1", "T-3", "T-5"]
    # state from Init survived, and the call counter kept counting across the die and the exit
    assert {r.split()[1] for r in records} == {f"session-{pid}"}
    assert [r.split()[2] for r in records] == ["1", "3", "5"]
    assert "closing ticket for event T-1 (call 1)" in caplog.text
    assert "about to close exit-4" in caplog.text


def test_state_survives_between_calls(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("stateful")
    with PerlHost(home) as host:
        for i in range(3):
            assert host.close(f"S{i}").ok
        pid = host.pid
    assert (home.tmp / "state.txt").read_text().splitlines() == [f"1 {n} {pid}" for n in (1, 2, 3)]


def test_die_is_an_error_reply(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("dies")
    with PerlHost(home) as host:
        outcome = host.close("A")
        assert host.state is HostState.RUNNING
    assert not outcome.ok and outcome.attempted and outcome.error == "always dies on Close"


def test_exit_is_trapped_and_globals_survive(
    home: Home, use_script: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    use_script("exits")
    caplog.set_level(logging.INFO, logger="ombridge.script")
    with PerlHost(home) as host:
        first = host.close("bye")
        second = host.close("after")
        assert host.restarts == 0
    assert first.error == "OMBackSync called exit(7)"
    assert second.ok
    assert "inits=1" in caplog.text and "inits=2" not in caplog.text


def test_hang_times_out_kills_and_restarts(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("hangs")
    with PerlHost(home, timeout=2.0) as host:  # also the start's: generous for a busy machine
        host.start()
        hung_pid = host.pid
        assert hung_pid is not None
        outcomes = host.deliver_all(["A", "hang-1", "B"])
        assert [o.ok for o in outcomes] == [True, False, True]
        assert outcomes[1].error == "call timed out after 2s"
        assert host.restarts == 1 and host.pid != hung_pid
        assert not alive(hung_pid)


def test_segfault_restarts_and_goes_on(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("segfault")
    with PerlHost(home) as host:
        outcomes = host.deliver_all(["A", "segv-1", "B", "C"])
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert "killed by SIGSEGV" in (outcomes[1].error or "")


def test_script_output_cannot_corrupt_the_protocol(
    home: Home, use_script: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    use_script("chatty")
    caplog.set_level(logging.INFO, logger="ombridge.script")
    with PerlHost(home) as host:
        outcomes = host.close_many(["A", "flood", "B"])
        assert host.restarts == 0
    assert all(o.ok for o in outcomes)
    wait_for(lambda: "stderr line" in caplog.text and "ERR fake" in caplog.text)
    assert "warning from Close" in caplog.text


def test_syntax_error_gives_perls_message_with_the_users_line(home: Home, use_script: Callable[[str], Path]) -> None:
    script = use_script("syntax_error")
    host = PerlHost(home)
    with pytest.raises(ScriptSyntaxError) as info:
        host.start()
    assert f"syntax error at {script} line 6" in info.value.message
    assert host.state is HostState.SYNTAX_ERROR and host.pid is None
    assert not host.ensure_running()  # waits for an operator


def test_missing_sub_is_refused(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("no_sub")
    host = PerlHost(home)
    with pytest.raises(PerlStartError, match="OMBackSync is not defined"):
        host.start()
    host.stop()


def test_exit_while_loading_with_status_zero_still_loads(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("exit_at_load")
    with PerlHost(home) as host:
        assert host.close("A").ok


def test_init_that_dies_is_tried_again_forever_with_capped_backoff(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("init_dies")
    now = [0.0]
    host = PerlHost(home, backoff=Backoff(base=1, cap=2, start_cap=4), clock=lambda: now[0])
    with pytest.raises(PerlStartError, match=r"OMBackSync\('Init'\) died: cannot reach the ticket system"):
        host.start()
    assert host.state is HostState.BACKOFF and host.retry_at == 0.0  # first restart is immediate
    outcome = host.close("A")  # tries to start again, fails again
    assert not outcome.ok and not outcome.attempted
    assert host.state is HostState.BACKOFF and host.retry_at == 1.0
    assert not host.close("A").attempted and host.state is HostState.BACKOFF  # backoff not over
    snap = host.snapshot()
    assert snap["state"] == "backoff" and snap["retry_in"] == 1.0 and "cannot reach" in snap["last_error"]
    waits = []
    for _ in range(6):  # never fatal: every try fails again and waits at most start_cap
        now[0] = host.retry_at or now[0]
        host.close("A")
        assert host.state is HostState.BACKOFF
        waits.append((host.retry_at or 0) - now[0])
    assert waits == [2, 4, 4, 4, 4, 4]
    assert "cannot reach" in (host.last_error or "") and "next try in" not in (host.last_error or "")
    use_script("recorder")  # the ticket system is back
    now[0] = host.retry_at or now[0]
    assert host.close("A").ok and host.state is HostState.RUNNING
    host.stop()


def test_restart_with_a_broken_script_keeps_the_old_child(home: Home) -> None:
    with PerlHost(home) as host:
        host.start()
        pid = host.pid
        home.script.write_text("sub OMBackSync { my $x = ; }\n")
        with pytest.raises(ScriptSyntaxError):
            host.restart()
        assert host.state is HostState.RUNNING and host.pid == pid
        assert host.close("still-served").ok


def test_pipelined_batch_keeps_order(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("third_party")
    ids = [f"ID-{n}" for n in range(5000)]
    with PerlHost(home) as host:
        outcomes = host.close_many(ids)
    assert [o.subject for o in outcomes] == ids and all(o.ok for o in outcomes)
    assert hex_lines(home.tmp / "closed.hex") == [i.encode().hex() for i in ids]


def test_child_exits_when_stdin_closes_and_when_the_parent_dies(home: Home) -> None:
    program = (
        "import os, sys; sys.path.insert(0, %r)\n"
        "from pathlib import Path; from bridge.home import Home; from bridge.ombacksync.perlhost import PerlHost\n"
        "h = PerlHost(Home(Path(%r))); h.start(); print(h.pid, flush=True); os._exit(0)\n"
    ) % (str(ROOT), str(home.root))
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    orphan = int(out.stdout)
    wait_for(lambda: not alive(orphan))


def test_backoff_is_capped_exponential() -> None:
    b = Backoff(base=0.5, cap=4, start_cap=16)
    assert [b.delay(n) for n in range(1, 8)] == [0, 0.5, 1, 2, 4, 4, 4]
    assert [b.delay(n, failed_starts=1) for n in range(5, 10)] == [4, 8, 16, 16, 16]
    assert b.delay(10**6, failed_starts=10**6) == 16


def test_a_host_that_dies_is_seen_at_once_although_a_piped_open_holds_its_pipes(home: Home) -> None:
    # open '-|' forks without fork(): the child keeps the protocol descriptors, so their EOF
    # would come only when it ends (15 s here); the host's own exit is watched instead.
    home.script.write_text(r"""
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    if ($id eq 'die') {
        my $pid = open(my $fh, '-|');
        if (defined $pid && $pid == 0) { sleep 15; exit 0 }
        kill 'KILL', $$;
    }
    return 1;
}
1;
""")
    with PerlHost(home) as host:
        host.start()
        started = time.monotonic()
        ok, died = host.close_many(["fine", "die"])
        assert time.monotonic() - started < 10
        assert ok.ok and not died.ok and re.fullmatch(r"perl child \d+ was killed by SIGKILL", died.error)
        (again,) = host.close_many(["fine-2"])
        assert again.ok


def test_a_host_that_dies_while_loading_is_seen_at_once_although_a_piped_open_holds_its_pipes(
        home: Home) -> None:
    # The same at the script's top level: the greeting is never written, the host's exit is seen.
    home.script.write_text(r"""
my $pid = open(my $fh, '-|');
if (defined $pid && $pid == 0) { sleep 15; exit 0 }
kill 'KILL', $$;
sub OMBackSync { 1 }
1;
""")
    with PerlHost(home) as host:
        started = time.monotonic()
        with pytest.raises(PerlStartError, match=r"perl child \d+ was killed by SIGKILL"):
            host.start()
        assert time.monotonic() - started < 10


def test_exit_0_at_the_top_level_ends_loading_and_what_was_defined_by_then_is_checked(home: Home) -> None:
    home.script.write_text("*main::OMBackSync = sub { 1 };\nexit 0;\n")
    with PerlHost(home) as host:
        host.start()
        assert host.state is HostState.RUNNING
    home.script.write_text("exit 0;\n*main::OMBackSync = sub { 1 };\n")
    with PerlHost(home) as host:
        with pytest.raises(PerlStartError, match="OMBackSync is not defined in"):
            host.start()
