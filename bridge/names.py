"""Names and values of the event core's vocabulary: topics, key fields, variables.

Kept apart (and light to import) because ``ombridge send`` validates with them on every call.
"""

from __future__ import annotations

import json
import re

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TOPIC_RE = re.compile(r"[a-z][a-z0-9_-]*(?:/[a-z][a-z0-9_-]*)+")
PREFIX_RE = re.compile(r"[a-z][a-z0-9_-]*(?:/[a-z][a-z0-9_-]*)*")
FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_FIELDS = frozenset({"TOPIC", "EVENT", "KEY"})  # variables every event has


def check_topic_name(name: str) -> str:
    """Refuse a topic name that is not ``subject{/subject}/action`` in lower-case words."""
    if not TOPIC_RE.fullmatch(name):
        raise UsageError(
            f"bad topic {name!r}: a topic is subject{{/subject}}/action in lower-case words, e.g. task/add"
        )
    return name


def check_field_name(name: str) -> str:
    """Refuse a key field name that cannot be a &VAR."""
    if not FIELD_RE.fullmatch(name):
        raise UsageError(f"bad key field {name!r}: use letters, digits and _ (it becomes the variable &{name})")
    if name in RESERVED_FIELDS:
        raise UsageError(f"key field {name} is reserved: &{name} is set on every event")
    return name


def check_pattern(pattern: str) -> str:
    """Refuse a subscriber topic that is neither a topic, ``prefix/*`` nor ``*``."""
    if pattern == "*" or TOPIC_RE.fullmatch(pattern):
        return pattern
    if pattern.endswith("/*") and PREFIX_RE.fullmatch(pattern[:-2]):
        return pattern
    raise UsageError(f"bad topic pattern {pattern!r}: use a topic (task/add), a generic topic (task/*) or *")


def variable_name(variable: str) -> str:
    """``&APPC`` or ``APPC`` -> ``APPC``; refuses anything that is not a variable name."""
    name = variable[1:] if variable.startswith("&") else variable
    if not FIELD_RE.fullmatch(name):
        raise UsageError(f"bad variable {variable!r}: use &NAME with letters, digits and _")
    return name


def value_text(value: Any) -> str:
    """A key value as the text a &VAR or a filter sees (numbers as in JSON)."""
    return value if isinstance(value, str) else json.dumps(value)

