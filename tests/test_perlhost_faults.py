"""Faults at precise moments, from a scripted stand-in host (a real process on real pipes).

The stand-in replaces perl/ombridge_host.pl and follows $OMBRIDGE_TEST_PLAN: one action for the
greeting, then one per request (see tests/fixtures/hosts/scripted_host.pl).
"""

from __future__ import annotations

import pytest
from conftest import SCRIPTED_HOST

from bridge.errors import PerlStartError
from bridge.home import Home
from bridge.ombacksync.perlhost import HostSettings, HostState, PerlHost


@pytest.fixture
def scripted(home: Home, monkeypatch: pytest.MonkeyPatch):
    def make(plan: str, timeout: float = 2.0) -> PerlHost:
        monkeypatch.setenv("OMBRIDGE_TEST_PLAN", plan)
        # Init gets its own (long) timeout in real life; here both are short.
        return PerlHost(home, host_script=SCRIPTED_HOST, timeout=timeout,
                        settings=HostSettings(init_timeout=timeout))

    return make


def outcome_shape(outcomes) -> list[tuple[bool, bool]]:
    return [(o.ok, o.attempted) for o in outcomes]


def test_garbage_mid_batch_fails_the_call_in_flight_only(scripted) -> None:
    host = scripted("ready;ok;ok;ok;say:this is not the protocol")
    host.start()
    outcomes = host.close_many(["A", "B", "C", "D", "E"])
    assert outcome_shape(outcomes) == [(True, True), (True, True), (False, True), (False, False), (False, False)]
    assert "protocol error" in outcomes[2].error
    assert host.state is HostState.BACKOFF and host.restarts == 1
    host.stop()


def test_death_after_k_replies(scripted) -> None:
    host = scripted("ready;ok;ok;exit:9")
    host.start()
    outcomes = host.close_many(["A", "B", "C"])
    assert outcome_shape(outcomes) == [(True, True), (False, True), (False, False)]
    assert outcomes[1].error.endswith("exited with status 9")
    host.stop()


def test_half_written_reply_then_death(scripted) -> None:
    host = scripted("ready;ok;ok;partial:O")
    host.start()
    outcomes = host.close_many(["A", "B"])
    assert outcome_shape(outcomes) == [(True, True), (False, True)]
    host.stop()


def test_killed_by_a_signal_mid_batch(scripted) -> None:
    host = scripted("ready;ok;ok;kill:SEGV")
    host.start()
    outcomes = host.close_many(["A", "B"])
    assert "killed by SIGSEGV" in outcomes[1].error
    host.stop()


def test_death_before_the_greeting_is_a_failed_start(scripted) -> None:
    host = scripted("exit:4")
    with pytest.raises(PerlStartError, match="exited with status 4"):
        host.start()
    assert host.state is HostState.BACKOFF


def test_garbage_greeting_is_a_failed_start(scripted) -> None:
    host = scripted("say:HELLO")
    with pytest.raises(PerlStartError, match="protocol error"):
        host.start()


def test_death_during_init(scripted) -> None:
    host = scripted("ready;exit:1")
    with pytest.raises(PerlStartError, match=r"Init'\) failed: .*exited with status 1"):
        host.start()


def test_silent_host_times_out_at_load(scripted) -> None:
    host = scripted("hang", timeout=0.3)
    with pytest.raises(PerlStartError, match="did not load the script within 0.3s"):
        host.start()


def test_child_that_died_while_idle_is_restarted_before_the_next_call(scripted) -> None:
    host = scripted("ready;ok")
    host.start()
    assert host._child is not None
    host._child.kill()  # dies between calls, with nothing in flight
    outcome = host.close("A")
    assert outcome.ok and host.restarts == 1
    host.stop()


def test_perl_that_cannot_be_run_is_a_clear_start_error(home: Home) -> None:
    host = PerlHost(home, perl="/nonexistent/perl")
    host.check = lambda: "syntax OK"  # perl -c itself is not the subject here
    with pytest.raises(PerlStartError, match="cannot run /nonexistent/perl"):
        host.start()
    assert host.state is HostState.BACKOFF
