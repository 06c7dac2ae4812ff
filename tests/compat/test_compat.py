"""The plain-perl differential suite: every case runs under the reference driver and through
ombridge (``try`` and a running supervisor), and must leave the same traces (see harness.py).

This is the contract of "your OMBackSync.pl, unchanged": add a case for every behaviour a
script may rely on. docs/compatibility.md lists what is identical and what deliberately differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import RUNNERS, Case, fresh, load_cases, run_reference

CASES = load_cases()
PAIRS = [(case, runner) for case in CASES for runner in case.runners]


def test_the_suite_has_enough_cases() -> None:
    assert len(CASES) >= 25
    assert all(c.runners and set(c.runners) <= set(RUNNERS) for c in CASES)


@pytest.mark.parametrize(("case", "runner"), PAIRS, ids=[f"{c.name}-{r}" for c, r in PAIRS])
def test_same_as_plain_perl(case: Case, runner: str, tmp_path: Path) -> None:
    reference = run_reference(fresh(tmp_path / "plain", case), case)
    assert reference.outcomes, "the reference driver recorded nothing"
    bridged = RUNNERS[runner](fresh(tmp_path / "bridged", case), case)
    assert bridged.outcomes == reference.outcomes
    assert bridged.files == reference.files
    assert reference.leftovers == [] and bridged.leftovers == []
