"""The supervisor's chores scheduler (bridge/daemon/chores.py), with a fake clock and a real event core."""

from __future__ import annotations

import sqlite3

import pytest

from bridge import store
from bridge.daemon import chores
from bridge.daemon.chores import Chores
from bridge.eventcore import retention
from bridge.home import Home
from bridge.outage import REPEAT_EVERY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(home: Home, clock: Clock, **options: object) -> Chores:
    settings = {"retention_seconds": 3600.0, "metrics_textfile": None, "metrics_interval": 15.0, **options}
    return Chores(store.Store(home), status=lambda: {}, clock=clock, **settings)  # type: ignore[arg-type]


def test_each_chore_is_due_on_its_own_schedule(home: Home) -> None:
    clock = Clock()
    c = make(home, clock, metrics_textfile=str(home.root / "m.prom"))
    assert c.due() == ["checkpoint", "metrics"]  # pruning waits a minute after the start
    assert c.due() == []
    clock.now += chores.CHECKPOINT_EVERY
    assert c.due() == ["checkpoint"]
    clock.now += 15.0
    assert c.due() == ["checkpoint", "metrics"]
    clock.now += chores.PRUNE_FIRST
    assert c.due() == ["checkpoint", "prune", "metrics"]
    clock.now += chores.PRUNE_EVERY - 1
    assert "prune" not in c.due()


def test_nothing_is_pruned_or_written_when_not_asked(home: Home) -> None:
    clock = Clock()
    c = make(home, clock, retention_seconds=None)
    clock.now += 10 * chores.PRUNE_EVERY
    assert c.due() == ["checkpoint"]


def test_a_failing_chore_neither_stops_the_others_nor_floods_the_log(home: Home, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # The checkpoint runs every second: on a full disk it must not keep pruning from running,
    # nor log a line a second.
    def full(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    pruned = []
    real_prune = retention.prune
    monkeypatch.setattr(store, "checkpoint", full)
    monkeypatch.setattr(retention, "prune", lambda conn, seconds: pruned.append(seconds) or real_prune(conn, seconds))
    clock = Clock()
    c = make(home, clock)
    for _ in range(3):
        c.run_due(["checkpoint", "prune"])
        clock.now += 1.0
    assert pruned == [3600, 3600, 3600]
    failures = [r.getMessage() for r in caplog.records if "periodic" in r.getMessage()]
    assert failures == ["periodic checkpoint failed: database or disk is full"]
    clock.now += REPEAT_EVERY
    c.run_due(["checkpoint"])
    assert len([r for r in caplog.records if "periodic" in r.getMessage()]) == 2  # a minute later: again
