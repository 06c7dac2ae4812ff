"""The plain-perl differential suite: every case runs under the reference driver and through
ombridge (``try`` and a running supervisor), and must leave the same traces (see harness.py).

This is the contract of "your OMBackSync.pl, unchanged": add a case for every behaviour a
script may rely on. docs/compatibility.md lists what is identical and what deliberately differs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import RUNNERS, Case, Run, call_key, fresh, load_cases, run_reference

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
    assert same_calls(case, bridged) == reference.outcomes
    # A reference's address (HASH(0x...)) is never a readable outcome, and differs run to run.
    assert not [o for o in bridged.outcomes if re.search(r"[A-Z]+\(0x[0-9a-f]+\)", o)]
    assert bridged.files == reference.files
    assert bridged.output == reference.output  # what the script printed or warned: no more, no less
    if "tails" not in case.skip:
        assert bridged.tails == reference.tails
    assert reference.leftovers == [] and bridged.leftovers == []


def same_calls(case: Case, bridged: Run) -> list[str]:
    """ombridge's outcomes without those of the calls plain perl never finishes (``differs``),
    each checked against the documented difference."""
    keys = {call_key(call): start for call, start in case.differs.items()}
    kept = []
    for outcome in bridged.outcomes:
        key = next((k for k in keys if outcome.startswith(k + " ")), None)
        if key is None:
            kept.append(outcome)
        else:
            assert outcome.startswith(f"{key} {keys[key]}"), outcome
    return kept
