"""A bounded chaos trial inside `make test`; `make chaos` runs the full 20 x 10,000."""

from __future__ import annotations

import pytest
from chaos import run_trial


def test_kill_9_at_random_instants_loses_nothing() -> None:
    trial = run_trial(events=1500, seed=7, crashes=3)
    assert trial.crashes + trial.perl_kills == 3
    assert trial.lost == 0
    assert trial.orphans == 0


def test_kill_9_with_four_children_loses_nothing() -> None:
    trial = run_trial(events=1500, seed=11, crashes=3, children=4)
    assert trial.crashes + trial.perl_kills == 3
    assert trial.lost == 0
    assert trial.orphans == 0


@pytest.mark.slow
def test_chaos_soak() -> None:
    for seed in range(5):
        trial = run_trial(events=10_000, seed=100 + seed, crashes=6)
        assert trial.lost == 0 and trial.orphans == 0


def test_an_id_after_a_torn_line_is_counted_and_a_torn_one_is_not(tmp_path) -> None:
    # A writer killed inside a write that crosses a page boundary leaves part of its line; the
    # next writer's line follows it. Counting by lines took that next ID for lost.
    from chaos import _delivered

    out = tmp_path / "out.txt"
    out.write_text("<CHAOS-1-1>\n<CHAOS-1-2<CHAOS-1-3>\n<CHAOS-1-2>\n<CHAOS-1-1")
    counted, torn = _delivered(out)
    assert counted == {"CHAOS-1-1": 1, "CHAOS-1-3": 1, "CHAOS-1-2": 1}
    assert torn == 2
