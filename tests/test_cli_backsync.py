"""`ombridge check` and `ombridge try`, end to end through the installed command."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import OMBRIDGE, hex_lines, run_ombridge

from bridge.home import Home, resolve_home


def run(home: Home | None, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return run_ombridge(home, *args, check=False, timeout=60, **options)


def test_check_ok(home: Home) -> None:
    r = run(home, "check")
    assert r.returncode == 0 and r.stdout.strip().endswith("syntax OK") and r.stderr == ""


def test_check_syntax_error_gives_perls_message(home: Home, use_script: Callable[[str], Path]) -> None:
    script = use_script("syntax_error")
    r = run(home, "check")
    assert r.returncode == 1
    assert f'syntax error at {script} line 6, near "= ;"' in r.stderr
    assert "had compilation errors" in r.stderr and "Traceback" not in r.stderr


def test_check_warns_when_the_script_is_readable_by_others(home: Home) -> None:
    os.chmod(home.script, 0o644)
    r = run(home, "check")
    assert r.returncode == 0
    assert "accessible by group or others (mode 0644)" in r.stderr and "chmod 600" in r.stderr


def test_check_without_a_script(tmp_path: Path) -> None:
    r = run(Home(tmp_path), "check")  # neither a script nor an event core: not a home at all
    assert r.returncode == 2 and "is not an ombridge home" in r.stderr
    from bridge import store

    store.connect(Home(tmp_path)).close()  # a home with an event core whose script went missing
    r = run(Home(tmp_path), "check")
    assert r.returncode == 1
    assert r.stderr.strip() == f"no script at {tmp_path}/conf/backsync/OMBackSync.pl"


def test_try_third_party_script(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("third_party")
    r = run(home, "try", "A 1", "die-2", "exit-3", "ü'4\"")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "OK   A 1",
        "ERR  die-2: ticket system refused die-2",
        "ERR  exit-3: OMBackSync called exit(3)",
        "OK   ü'4\"",
    ]
    assert "closing ticket for event A 1" in r.stderr  # the script's chatter, kept off stdout
    assert hex_lines(home.tmp / "closed.hex") == ["A 1".encode().hex(), "ü'4\"".encode().hex()]


def test_try_all_ok_exits_zero_and_writes_the_example_lines(home: Home) -> None:
    r = run(home, "try", "EVT-1", "--json")
    assert r.returncode == 0, r.stderr
    assert '"ok": true' in r.stdout
    assert home.output.read_text().splitlines()[-1].endswith(" Close EVT-1")


def test_try_reads_ids_from_stdin(home: Home) -> None:
    r = run(home, "try", "-", stdin="one\n\ntwo\r\n")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["OK   one", "OK   two"]


def test_try_refuses_an_empty_id_before_running_anything(home: Home) -> None:
    r = run(home, "try", "A", "")
    assert r.returncode == 2 and r.stderr.strip() == "ombridge: error: an ID must not be empty"
    assert not home.output.exists()


def test_try_with_init_that_dies(home: Home, use_script: Callable[[str], Path]) -> None:
    use_script("init_dies")
    r = run(home, "try", "A")
    assert r.returncode == 1
    assert r.stderr.strip() == "ombridge: error: OMBackSync('Init') died: cannot reach the ticket system"


def test_home_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):  # each a home (it holds a script)
        (d / "conf" / "backsync").mkdir(parents=True)
        (d / "conf" / "backsync" / "OMBackSync.pl").write_text("sub OMBackSync {} 1;\n")
    monkeypatch.chdir(c)
    assert resolve_home().root == c
    monkeypatch.setenv("OvDataDir", str(b))
    assert resolve_home().root == b
    monkeypatch.setenv("OMBRIDGE_HOME", str(a))
    assert resolve_home().root == a
    assert resolve_home(str(c)).root == c


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    r = subprocess.run([OMBRIDGE, "--home", str(f), "check"], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr


def test_split_storable_refuses_exactly_what_the_event_core_would_refuse() -> None:
    from bridge.delivery.backsync import split_storable
    from bridge.eventcore.events import canonical_key

    ids = ["EVT-1", "", "a\x00b", "x" * 70000, "\x01" * 11000, "\x01" * 10000, "é" * 30000]
    good, refused = split_storable(ids)
    assert good == ["EVT-1", "\x01" * 10000, "é" * 30000]
    reasons = dict(refused)
    assert reasons[""] == "an ID must not be empty" and "NUL" in reasons["a\x00b"]
    assert "larger than" in reasons["x" * 70000] and "larger than" in reasons["\x01" * 11000]
    for event_id in good:  # what is kept fits: the stored key is under the limit
        assert len(canonical_key({"ID": event_id, "STATE": "closed"}).encode()) <= 65536


def test_close_from_stdin_names_an_id_that_is_not_utf8_and_sends_the_others(home: Home) -> None:
    r = subprocess.run([OMBRIDGE, "--home", str(home.root), "close", "-"], input=b"A\n\xff\xfeB\nC\n",
                       capture_output=True, timeout=120)
    assert r.returncode == 2 and r.stdout == b"2 closed events sent\n"
    assert r.stderr == b"ombridge: error: not sent: ID '\\xff\\xfeB': the ID is not valid UTF-8 text\n"
    sent = [e["key"]["ID"] for e in json.loads(run(home, "events", "list", "--json").stdout)]
    assert sorted(sent) == ["A", "C"]
