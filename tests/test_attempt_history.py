"""A delivery's attempt history after a retry (issue 22, defect 1): in time order, numbered once per
delivery, the header counting what is listed and the rounds visible, through the CLI and the console
of a real supervisor whose subscriber really fails."""

from __future__ import annotations

import json
import re

import pytest
from conftest import wait_for
from console_support import login
from web_support import omb

from bridge.home import Home

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)


def delivery_json(home: Home, delivery_id: str) -> dict:
    return json.loads(omb(home, "deliveries", "show", delivery_id, "--json").stdout)


@pytest.mark.both_stores
def test_attempts_read_in_time_order_after_a_retry(home: Home, listening) -> None:
    srv = listening()
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "echo x >&2; exit 1", "--retries", "1").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    omb(home, "send", "task/change", '{"TASK": "T1"}')
    (row,) = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    did = str(row["id"])
    wait_for(lambda: delivery_json(home, did)["status"] == "failed", timeout=60, what="failed after 2 attempts")
    assert omb(home, "retry").stdout.strip() == "1 failed deliveries reopened"
    wait_for(lambda: (lambda d: d["status"] == "failed" and len(d["attempt_log"]) == 4)(delivery_json(home, did)),
             timeout=60, what="failed twice more")

    log = delivery_json(home, did)["attempt_log"]
    assert [a["n"] for a in log] == [1, 2, 3, 4]
    assert [a["round"] for a in log] == [1, 1, 2, 2]
    assert [a["number"] for a in log] == [1, 2, 1, 2]  # the attempt within its round, as stored
    assert [a["started_at"] for a in log] == sorted(a["started_at"] for a in log)

    text = omb(home, "deliveries", "show", did).stdout
    assert "failed, 4 attempts in 2 rounds (retried once), 1 retry allowed per round" in text
    assert re.findall(r"^  attempt (\d+):", text, re.M) == ["1", "2", "3", "4"]
    lines = [line.strip() for line in text.splitlines() if line.startswith("  round") or line.startswith("  attempt")]
    assert [line.split(":")[0] for line in lines] == ["round 1", "attempt 1", "attempt 2", "round 2 (retried)",
                                                      "attempt 3", "attempt 4"]

    page = login(srv).get(f"/ui/deliveries/{did}").text
    assert "4 attempts in 2 rounds (retried once)" in page
    headings = re.findall(r"<h3[^>]*>(.*?)</h3>", page)
    shown = [re.sub(r"<[^>]+>", "", h) for h in headings]
    assert shown == ["Round 1", "#1 failed (round 1, attempt 1 of the round)", "#2 failed (round 1, attempt 2 of the round)",
                     "Round 2 after a retry", "#3 failed (round 2, attempt 1 of the round)",
                     "#4 failed (round 2, attempt 2 of the round)"]
    assert page.count("after a retry") == 1  # nothing that ran before the retry is labelled so
