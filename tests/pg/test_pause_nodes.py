"""A pause holds every node (issue 32, item 1): two real supervisors on one real PostgreSQL
database; the backsync is paused from node a's command line, closes sent to either node are
stored and run by neither, while both keep delivering other work; resumed from a's command line,
the other node runs them at once (a NOTIFY, not its 60 s poll), each once, in the order sent."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from conftest import run_ombridge as omb
from conftest import status, wait_for
from test_two_nodes import POLL, closed_ids, cluster, command_subscriber  # noqa: F401  (the fixture)

from bridge.home import Home


def open_closes(home: Home) -> list[tuple[str, int]]:
    listed = json.loads(omb(home, "deliveries", "list", "--subscriber", "1", "--limit", "1000", "--json").stdout)
    return [(d["status"], d["attempts"]) for d in listed]


def test_a_pause_on_one_node_holds_the_closes_on_every_node_and_a_resume_runs_them(cluster,  # noqa: F811
                                                                                   tmp_path: Path) -> None:
    a, b = cluster
    out = tmp_path / "ran.txt"
    command_subscriber(a, out)
    omb(b, "start", "--poll", POLL)  # b serves; a only runs commands, then serves too
    omb(a, "subscriber", "pause", "1")
    omb(a, "start", "--poll", POLL)
    omb(a, "close", "A-1", "A-2")
    omb(b, "close", "B-1")
    omb(b, "send", "task/change", '{"TASK": "T-1"}')  # work that is not paused: delivered meanwhile
    omb(a, "send", "task/change", '{"TASK": "T-2"}')
    wait_for(lambda: out.exists() and sorted(out.read_text().split()) == ["T-1", "T-2"], timeout=30,
             what="the command subscriber's events ran")
    assert open_closes(a) == [("open", 0)] * 3  # stored, attempted by no node
    assert closed_ids(a, b) == Counter()
    for home in (a, b):
        (paused,) = status(home)["paused"]
        assert paused["id"] == 1 and paused["held"] == 3 and paused["paused_by"].startswith("local user ")

    begun = time.monotonic()
    omb(a, "subscriber", "resume", "1")
    wait_for(lambda: closed_ids(a, b) == Counter(["A-1", "A-2", "B-1"]), timeout=15, what="the closes ran")
    assert time.monotonic() - begun < 15  # woken, well inside the 60 s poll
    sent = ["A-1", "A-2", "B-1"]
    for home in (a, b):  # each node ran what it took in the order sent
        ran = [line.split()[-1] for line in home.output.read_text().splitlines() if " Close " in line] \
            if home.output.exists() else []
        assert ran == sorted(ran, key=sent.index), ran
    wait_for(lambda: open_closes(a) == [("done", 1)] * 3, what="the closes recorded")
