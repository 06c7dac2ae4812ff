"""The one outage-logging policy (bridge/outage.py), with a fake clock: a minute is not waited for."""

from __future__ import annotations

import logging

import pytest

from bridge.outage import REPEAT_EVERY, Outage


def test_an_outage_is_said_once_again_a_minute_later_and_its_end_with_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(logging.getLogger("t"), "storing", clock=lambda: now[0])
    caplog.set_level(logging.INFO, "t")
    outage.recovered()  # no outage: nothing to say
    for _ in range(276):
        outage.failed("the database  is\naway")
        now[0] += 0.2
    assert [r.getMessage() for r in caplog.records] == ["storing: the database is away"]
    now[0] = 100.0 + REPEAT_EVERY - 1
    outage.failed("the server restarts")  # the reason changes as the database goes and comes back
    now[0] += 1
    outage.failed("connection refused")
    now[0] += 5
    outage.recovered()
    outage.recovered()
    assert [r.getMessage() for r in caplog.records][1:] == [
        "storing: still failing: connection refused (277 more since the last line, 278 in all)",
        f"storing: the event core answers again after {REPEAT_EVERY + 5:.0f}s (278 failure(s) meanwhile)"]
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "WARNING"]
    outage.failed("again")  # a new outage is said at once
    assert caplog.records[-1].getMessage() == "storing: again"
