"""The supervisor's command handling, without processes: a Supervisor over a real home in tmp_path
whose perl host, Event Manager and reporter are stand-ins, fed Commands the way signals, control
requests and the perl host feed them. (tests/test_supervisor.py drives the real one.)"""

from __future__ import annotations

import logging
import os
import signal
from concurrent.futures import Future
from typing import Any

import pytest

from bridge import store
from bridge.daemon import supervisor
from bridge.daemon.supervisor import Command, Supervisor
from bridge.errors import BridgeError, RestartRefused, ScriptSyntaxError
from bridge.home import Home
from bridge.model import HostState, IllegalTransition, SupervisorState


class FakeHost:
    def __init__(self) -> None:
        self.state = HostState.RUNNING
        self.failed_starts = 0
        self.calls: list[str] = []
        self.timeout = 30.0
        self.pid = 4242
        self.broken: str | None = None  # perl's message when the script does not compile

    def close_down(self) -> None:
        self.calls.append("close_down")

    def any_running(self) -> bool:
        return self.state is HostState.RUNNING

    def kill(self) -> None:
        self.calls.append("kill")

    def restart(self) -> None:
        self.calls.append("restart")
        if self.broken:
            raise ScriptSyntaxError("OMBackSync.pl", self.broken)

    def start(self) -> None:
        self.calls.append("start")

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state.value, "pid": self.pid, "restarts": 0}


class FakeManager:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def status(self) -> dict[str, Any]:
        return {"state": "running"}


class FakeReporter:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str | None]] = []

    def report(self, message: str, script: str | None = None) -> None:
        self.reports.append((message, script))


@pytest.fixture
def sup(home: Home) -> Supervisor:
    s = Supervisor(home, log_to_stderr=False)
    s.host, s.manager, s.reporter = FakeHost(), FakeManager(), FakeReporter()  # type: ignore[assignment]
    s._change_state(SupervisorState.RUNNING)
    return s


def jobs(s: Supervisor) -> list[Any]:
    queued = []
    while not s._jobs.empty():
        queued.append(s._jobs.get_nowait())
    return queued


def test_a_stop_closes_the_host_down_and_queues_the_shutdown(sup: Supervisor) -> None:
    sup.request_stop()
    assert sup.state is SupervisorState.RUNNING  # a request only queues: the main loop decides
    sup._apply_commands()
    assert sup.state is SupervisorState.STOPPING
    assert sup.host.calls == ["close_down"]  # type: ignore[union-attr]
    assert [work for work, _ in jobs(sup)] == [sup._shutdown]


def test_a_restart_while_stopping_is_refused(sup: Supervisor) -> None:
    sup.request_stop()
    answer: Future[Any] = Future()
    sup._command(Command.RESTART, ("ombacksync", answer))
    sup._apply_commands()
    with pytest.raises(BridgeError, match="ombridge is stopping: nothing is restarted"):
        answer.result(0)
    assert [work for work, _ in jobs(sup)] == [sup._shutdown]  # no restart job beside it


def test_a_restart_while_running_becomes_one_lifecycle_job(sup: Supervisor) -> None:
    answer: Future[Any] = Future()
    sup._command(Command.RESTART, ("ombacksync", answer))
    sup._apply_commands()
    (work, given), = jobs(sup)
    assert given is answer and not answer.done()
    assert work()["ombacksync"]["pid"] == 4242  # (the job, run here rather than in the lifecycle thread)
    assert sup.host.calls == ["restart"]  # type: ignore[union-attr]


def test_a_refused_restart_is_reported(sup: Supervisor) -> None:
    sup.host.broken = "syntax error at OMBackSync.pl line 6"  # type: ignore[union-attr]
    with pytest.raises(RestartRefused, match="the running ombacksync was kept"):
        sup._restart("ombacksync")
    assert sup.reporter.reports == [("syntax error at OMBackSync.pl line 6", "OMBackSync.pl")]  # type: ignore


def test_stop_twice_stops_at_once(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    sup.request_stop()
    sup._apply_commands()
    assert exits == []
    sup.request_stop()
    sup._apply_commands()
    assert exits == [0] and sup.host.calls == ["close_down", "kill"]  # type: ignore[union-attr]


def test_a_signal_only_queues_a_command(sup: Supervisor) -> None:
    sup._on_signal(signal.SIGTERM, None)
    assert sup.state is SupervisorState.RUNNING and jobs(sup) == []
    sup._apply_commands()
    assert sup.state is SupervisorState.STOPPING


def test_a_host_change_is_reported_by_the_reporter_not_on_the_main_loop(sup: Supervisor,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError("the main loop opened the event core")

    monkeypatch.setattr(store, "connect", no_io)
    sup._command(Command.HOST_CHANGED, (HostState.STARTING, HostState.SYNTAX_ERROR, "line 6: syntax error"))
    sup._apply_commands()
    assert sup.reporter.reports == [("line 6: syntax error", None)]  # type: ignore[union-attr]
    assert sup.manager.wakes == 1 and jobs(sup) == []  # type: ignore[union-attr]


def test_which_host_changes_are_reported(sup: Supervisor) -> None:
    changes = [
        (HostState.SYNTAX_ERROR, HostState.SYNTAX_ERROR, 0, False),  # no change: told already
        (HostState.STARTING, HostState.BACKOFF, 1, True),  # Init failed: told once...
        (HostState.STARTING, HostState.BACKOFF, 2, False),  # ...not at every retry
        (HostState.RUNNING, HostState.BACKOFF, 0, False),  # a crash: restarted, nobody told
        (HostState.RUNNING, HostState.STOPPED, 0, False),
    ]
    for old, new, failed_starts, told in changes:
        sup.reporter.reports.clear()  # type: ignore[union-attr]
        sup.host.failed_starts = failed_starts  # type: ignore[union-attr]
        sup._command(Command.HOST_CHANGED, (old, new, "why"))
        sup._apply_commands()
        assert bool(sup.reporter.reports) is told, (old, new, failed_starts)  # type: ignore[union-attr]


def test_an_illegal_state_change_is_refused_loudly(sup: Supervisor) -> None:
    with pytest.raises(IllegalTransition, match="cannot go from running to stopped"):
        sup._change_state(SupervisorState.STOPPED)
    sup._change_state(SupervisorState.STOPPING)
    with pytest.raises(IllegalTransition, match="cannot go from stopping to running"):
        sup._change_state(SupervisorState.RUNNING)
    assert supervisor.SupervisorState.STOPPING is sup.state
