"""``&VAR`` substitution in command strings, with no way for a value to become shell syntax.

Values never enter the command text. Each ``&NAME`` of a known variable is rewritten into a
quoted parameter expansion of an environment variable (``OMB_V_NAME``) that holds the value, and
the shell expands it at run time. The result of a parameter expansion is never parsed again, so
``$(reboot)``, backticks, ``'; rm -rf ~; '`` or newlines in a value reach the command as literal
text. The rewrite depends on where ``&NAME`` stands:

    bare            echo &TASK         ->  echo "${OMB_V_TASK}"
    in "..."        "task &TASK"       ->  "task ${OMB_V_TASK}"
    in '...'        'task &TASK.'      ->  'task '"${OMB_V_TASK}"'.'

so the value is one word wherever it stands (nothing lost to field splitting or globbing).
``&&``, ``&>``, ``\\&NAME`` and names that are not variables are left alone; a value that itself
contains ``&OTHER`` is not substituted again (it is never scanned).

What this cannot protect: a command that hands its text to a *second* shell parses the value
again there — ``sh -c "echo &V"``, ``bash -c``, ``ssh host "... &V"``, ``su -c``, ``eval``.
:func:`nested_shell` finds those, and a subscriber whose &VARs stand after one is refused unless
the operator says otherwise; an event program (which gets the key as an argument, and reads
fields with ``ombridge key get``) is the safe way to do such things.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

ENV_PREFIX = "OMB_V_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name(variable: str) -> str:
    """The environment variable that carries ``&variable``'s value."""
    return ENV_PREFIX + variable


def rewrite(command: str, names: Collection[str]) -> str:
    """Rewrite every ``&NAME`` (NAME in ``names``) of ``command`` into a quoted expansion."""
    if "&" not in command:
        return command
    out: list[str] = []
    i, n = 0, len(command)
    state = "plain"  # plain | single | double
    while i < n:
        c = command[i]
        if state == "single":
            if c == "'":
                state = "plain"
            elif c == "&":
                m = _NAME.match(command, i + 1)
                if m and m[0] in names:
                    out.append(f"'\"${{{env_name(m[0])}}}\"'")
                    i = m.end()
                    continue
            out.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < n:  # an escaped character is literal in plain and double quotes
            out.append(command[i:i + 2])
            i += 2
            continue
        if state == "double" and c == '"':
            state = "plain"
        elif state == "plain" and c == '"':
            state = "double"
        elif state == "plain" and c == "'":
            state = "single"
        elif c == "&":
            m = _NAME.match(command, i + 1)
            if m and m[0] in names:
                expansion = f"${{{env_name(m[0])}}}"
                out.append(expansion if state == "double" else f'"{expansion}"')
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


class _Recorder:
    """A stand-in for the variable names that says yes to every name and remembers it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __contains__(self, name: object) -> bool:
        self.seen.append(str(name))
        return True

    def __iter__(self):  # noqa: ANN204 - only to be a Collection
        return iter(self.seen)

    def __len__(self) -> int:
        return len(self.seen)


def references(command: str) -> list[str]:
    """The names of the ``&NAME`` references in ``command``, in order, as :func:`rewrite` sees them."""
    recorder = _Recorder()
    rewrite(command, recorder)
    return recorder.seen


_NESTED = re.compile(
    r"(?<![\w/.-])(?:(?:/\S*/)?(?:ba|da|z|k|a)?sh\s+(?:-\w+\s+)*-\w*c\b"  # sh -c, bash -c, /bin/sh -ec
    r"|(?:/\S*/)?ssh\b"  # ssh host "..."
    r"|(?:/\S*/)?su\b[^|;&]*\s-c\b"  # su - user -c "..."
    r"|eval\b)")  # eval "..."


def nested_shell(command: str) -> str | None:
    """The first construct of ``command`` that re-parses text in a second shell, if a &VAR
    reference stands after it (see the module docstring); None when there is none."""
    m = _NESTED.search(command)
    if m and references(command[m.end():]):
        return m[0].strip()
    return None


def environment(variables: Mapping[str, str]) -> dict[str, str]:
    """The environment entries that carry ``variables`` for :func:`rewrite`'s expansions."""
    return {env_name(name): value for name, value in variables.items()}

