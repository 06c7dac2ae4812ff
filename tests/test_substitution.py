"""&VAR substitution: hostile values reach the command literally, through a real /bin/sh."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.eventcore import substitution

HOSTILE = [
    "$(touch {canary})",
    "`touch {canary}`",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "$HOME ${{HOME}} $0",
    ";|&><*? {{a,b}} ~",
    "line1\nline2; touch {canary}\n",
    "\\'\\\"\\\\",
    "&TASK &APPC &&",
    "  spaced   out  ",
    "",
]


def sh(command: str, variables: dict[str, str]) -> str:
    script = substitution.rewrite(command, variables.keys())
    result = subprocess.run(["/bin/sh", "-c", script], env=substitution.environment(variables),
                            capture_output=True, check=True)
    return result.stdout.decode()  # bytes first: text mode would turn CR into LF


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize("command", [
    "printf '%s' &TASK",
    'printf "%s" "&TASK"',
    "printf '%s' '&TASK'",
])
def test_hostile_values_arrive_literally_and_run_nothing(tmp_path, template: str, command: str) -> None:
    canary = tmp_path / "canary"
    value = template.format(canary=canary)
    assert sh(command, {"TASK": value, "APPC": "X"}) == value
    assert not canary.exists()


def test_value_is_embedded_within_quotes() -> None:
    out = sh("printf '%s|' 'Task &TASK was changed in application &APPC.' \"dq &TASK.\" x&TASK",
             {"TASK": "T 1", "APPC": "KE1"})
    assert out == "Task T 1 was changed in application KE1.|dq T 1.|xT 1|"


def test_double_ampersand_and_unknown_names_are_left_alone() -> None:
    out = sh("true && printf '%s' '&UNKNOWN &TASK' && printf ' %s' '&TASKS'", {"TASK": "t"})
    assert out == "&UNKNOWN t &TASKS"


def test_escaped_ampersand_is_literal() -> None:
    assert sh("printf '%s' \\&TASK", {"TASK": "t"}) == "&TASK"


def test_value_containing_another_variable_is_not_substituted_again() -> None:
    assert sh("printf '%s' &TASK", {"TASK": "&APPC", "APPC": "nope"}) == "&APPC"


def test_commands_without_variables_are_untouched() -> None:
    assert substitution.rewrite("a && b & c", {"X"}) == "a && b & c"


@settings(max_examples=150, deadline=None)
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
       style=st.sampled_from(["&V", '"&V"', "'&V'", "'a&V b'", '"a&V b"']))
def test_any_value_round_trips(value: str, style: str) -> None:
    expected = style.strip("'\"").replace("&V", value)
    assert sh(f"printf '%s' {style}", {"V": value}) == expected
