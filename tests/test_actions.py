"""Actions for real: an event program's argv, timeouts that kill the group, bounded output, web calls."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery import actions
from bridge.eventcore.deliveries import EventContext

EVENT = EventContext(7, "task/change", {"APPC": "KE1", "TASK": "T 1", "N": 3}, '{"APPC":"KE1","TASK":"T 1","N":3}', 2)


def test_program_gets_topic_and_key_and_no_shell(tmp_path: Path) -> None:
    program = tmp_path / "prog.sh"
    out = tmp_path / "args"
    program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$#" "$1" "$2" "$OMBRIDGE_EVENT" "$OMB_V_TASK" > {out}\n')
    program.chmod(0o755)
    result = actions.perform("program", str(program), EVENT, 10)
    assert result.ok and result.exit_status == 0
    assert out.read_text().splitlines() == ["2", "task/change", EVENT.key_json, "7", "T 1"]


def test_command_sees_every_variable_and_the_chain(tmp_path: Path) -> None:
    result = actions.perform("command", 'printf "%s|" &APPC &TASK &N &TOPIC &EVENT &KEY "$OMBRIDGE_DEPTH"', EVENT, 10)
    assert result.ok
    assert result.output == f"KE1|T 1|3|task/change|7|{EVENT.key_json}|2|"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    started = time.monotonic()
    result = actions.perform("command", f"sleep 300 & echo $! > {pidfile}; wait", EVENT, 0.5)
    assert time.monotonic() - started < 5
    assert not result.ok and result.error == "timed out after 0.5s (process group killed)"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the background sleep survived"
        time.sleep(0.02)


def test_background_job_holding_the_pipe_does_not_stall_a_finished_command() -> None:
    started = time.monotonic()
    result = actions.perform("command", "sleep 10 & echo done", EVENT, 30)
    assert result.ok and "done" in result.output
    assert time.monotonic() - started < 8  # not the 10 s of the background job (generous: a busy machine)


def test_output_is_bounded_to_its_tail() -> None:
    result = actions.perform("command", "head -c 1000000 /dev/zero | tr '\\0' a; echo END", EVENT, 30)
    assert result.ok and len(result.output) == actions.OUTPUT_TAIL and result.output.endswith("aEND\n")


def test_output_reads_as_a_script_s_does_utf8_else_latin1() -> None:
    result = actions.perform("command", r"printf 'St\366rung, caf\303\251\n'", EVENT, 10)
    assert result.ok and result.output == "Störung, café\n"


def test_failure_exit_status_and_missing_program(tmp_path: Path) -> None:
    assert actions.perform("command", "exit 4", EVENT, 10).error == "exit status 4"
    assert actions.perform("command", "kill -TERM $$", EVENT, 10).error == "killed by SIGTERM"
    missing = actions.perform("program", str(tmp_path / "gone"), EVENT, 10)
    assert not missing.ok and "cannot run" in (missing.error or "")


class _Handler(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.received.append({"path": self.path, "body": body, "type": self.headers["Content-Type"]})
        if self.path == "/slow":
            time.sleep(2)
        code = 500 if self.path == "/broken" else 202
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"thanks")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.received.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_web_call_posts_the_event(web: str) -> None:
    result = actions.perform("web", f"{web}/hook", EVENT, 10)
    assert result.ok and result.exit_status == 202 and result.output == "thanks"
    assert _Handler.received == [{"path": "/hook", "type": "application/json",
                                  "body": {"event": 7, "topic": "task/change", "key": dict(EVENT.key)}}]


def test_web_call_failures(web: str) -> None:
    assert actions.perform("web", f"{web}/broken", EVENT, 10).error == "HTTP 500 Internal Server Error"
    slow = actions.perform("web", f"{web}/slow", EVENT, 0.3)
    assert not slow.ok and "web call failed" in (slow.error or "")
    refused = actions.perform("web", "http://127.0.0.1:9/", EVENT, 2)
    assert not refused.ok and "web call failed" in (refused.error or "")


def test_a_fork_that_fails_is_a_failed_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hard to cause for real (it takes exhausting the process table): fake it at Popen.
    def no_fork(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(actions.subprocess, "Popen", no_fork)
    result = actions.perform("command", "true", EVENT, 10)
    assert not result.ok and result.error == "cannot run /bin/sh: Resource temporarily unavailable"
