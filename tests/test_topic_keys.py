"""Issue 22, item 8: `topic add NAME --key FIELD...` takes the fields as the synopsis shows them
(`--key A B`), as well as `--key A --key B`; a bare word after NAME is refused with the syntax."""

from __future__ import annotations

import json

import pytest
from conftest import run_ombridge as omb

from bridge.home import Home

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)


def topics(home: Home) -> dict[str, list[str]]:
    return {t["name"]: t["key_fields"] for t in json.loads(omb(home, "topic", "list", "--json").stdout)}


def test_key_fields_after_one_key_option_or_repeated(home: Home) -> None:
    omb(home, "topic", "add", "task/change", "--key", "APPC", "TASK", "--description", "a task was changed")
    omb(home, "topic", "add", "task/other", "--key", "APPC", "--key", "TASK")
    assert topics(home)["task/change"] == topics(home)["task/other"] == ["APPC", "TASK"]
    omb(home, "send", "task/change", '{"APPC": "KE1", "TASK": "T"}', "--force")


def test_a_bare_word_after_the_name_is_refused_with_the_syntax(home: Home) -> None:
    r = omb(home, "topic", "add", "task/change", "APPC", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "ombridge: error: unexpected 'APPC': key fields follow --key (--key APPC)"
    assert "task/change" not in topics(home)
