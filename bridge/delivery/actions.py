"""Subscriber actions: a command string, an event program, or a web call.

Every action runs with a timeout that kills its whole process group, captures a bounded tail of
its output, and carries the event in its environment:

    OMBRIDGE_EVENT   the event id          OMBRIDGE_TOPIC   the topic
    OMBRIDGE_KEY     the key as JSON       OMBRIDGE_DEPTH   the event's depth in a chain
    OMB_V_<NAME>     each &NAME variable (see bridge.eventcore.substitution)

An event sent from inside an action finds OMBRIDGE_EVENT and OMBRIDGE_DEPTH there and records
its parent (bridge.eventcore.events, loop protection).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ..eventcore import substitution
from ..eventcore.deliveries import EventContext
from ..model import OUTPUT_TAIL, ActionKind, Attempt
from ..outputtext import text_of
from ..processes import kill_group

_running: set[int] = set()  # process groups of actions in flight (for an immediate stop)
_running_lock = threading.Lock()


def environment(event: EventContext) -> dict[str, str]:
    """The environment an action runs in: the supervisor's, the event's &VARs and its chain."""
    env = dict(os.environ)
    # `ombridge` itself is on the PATH of every action (to send follow-up events), even when
    # the supervisor was started with a bare PATH, as systemd does.
    env["PATH"] = _with_own_bin(env.get("PATH", ""))
    env.update(substitution.environment(event.variables()))
    env.update(OMBRIDGE_EVENT=str(event.id), OMBRIDGE_TOPIC=event.topic, OMBRIDGE_KEY=event.key_json,
               OMBRIDGE_DEPTH=str(event.depth))
    return env


def _with_own_bin(path: str) -> str:
    own = os.path.dirname(sys.executable)
    parts = [p for p in path.split(os.pathsep) if p]
    return os.pathsep.join(parts if own in parts else [*parts, own])


def run_command(command: str, event: EventContext, timeout: float, cwd: str | None = None) -> Attempt:
    """Run a command string through ``/bin/sh -c`` with its &VARs rewritten to safe expansions."""
    variables = event.variables()
    script = substitution.rewrite(command, variables.keys())
    return run_process(["/bin/sh", "-c", script], environment(event), timeout, cwd)


def run_program(program: str, event: EventContext, timeout: float, cwd: str | None = None) -> Attempt:
    """Run an event program without a shell: ``argv = [program, topic, key JSON]``."""
    return run_process([program, event.topic, event.key_json], environment(event), timeout, cwd)


def run_process(argv: list[str], env: Mapping[str, str], timeout: float, cwd: str | None = None) -> Attempt:
    """Run ``argv``; keep the last :data:`OUTPUT_TAIL` bytes of stdout+stderr; kill the process
    group at ``timeout``. Success is exit status 0."""
    started = time.time()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=dict(env), cwd=cwd, start_new_session=True)
    except OSError as exc:
        return Attempt(False, started, time.time(), error=f"cannot run {argv[0]}: {exc.strerror or exc}")
    assert proc.stdout is not None
    with _running_lock:
        _running.add(proc.pid)
    try:
        return _collect(proc, timeout, started)
    finally:
        with _running_lock:
            _running.discard(proc.pid)


def _collect(proc: subprocess.Popen[bytes], timeout: float, started: float) -> Attempt:
    assert proc.stdout is not None
    tail = bytearray()
    produced = 0  # bytes of output, the tail's and those before it
    deadline = time.monotonic() + timeout
    timed_out = False
    fd = proc.stdout.fileno()
    with proc.stdout, selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Wake now and then: a background job may hold the pipe open after the command exits.
            if sel.select(min(remaining, 0.25)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                tail += chunk
                produced += len(chunk)
                if len(tail) > 2 * OUTPUT_TAIL:
                    del tail[:-OUTPUT_TAIL]
            elif proc.poll() is not None:
                break
    if timed_out:
        kill_group(proc.pid)
    status = proc.wait()
    # Read as every output shown with an attempt is: UTF-8 where valid, Latin-1 elsewhere.
    output = text_of(bytes(tail[-OUTPUT_TAIL:]), cut=produced > OUTPUT_TAIL)
    ended = time.time()
    if timed_out:
        return Attempt(False, started, ended, None, output, f"timed out after {timeout:g}s (process group killed)")
    if status != 0:
        reason = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        return Attempt(False, started, ended, status, output, reason)
    return Attempt(True, started, ended, 0, output)


def running_count() -> int:
    """How many actions are in flight now."""
    with _running_lock:
        return len(_running)


def kill_running() -> int:
    """Kill the process group of every action in flight (an immediate stop); returns how many."""
    with _running_lock:
        groups = list(_running)
    for pid in groups:
        kill_group(pid)
    return len(groups)


def run_web(url: str, event: EventContext, timeout: float, headers: Mapping[str, str] | None = None) -> Attempt:
    """POST ``{"event": id, "topic": ..., "key": {...}}`` as JSON; any 2xx status is success.

    Redirects are not followed: a 3xx is a failed attempt naming where it pointed (following it
    would resend the event, or drop its body, to a place nobody configured).
    """
    import urllib.error
    import urllib.request

    body = json.dumps({"event": event.id, "topic": event.topic, "key": dict(event.key)}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        **(headers or {}),  # the subscriber's secret headers (Authorization, ...); ours below win
        "Content-Type": "application/json", "User-Agent": "ombridge",
        "X-Ombridge-Event": str(event.id), "X-Ombridge-Topic": event.topic})
    opener = urllib.request.build_opener(_NoRedirect)
    started = time.time()
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            text = response.read(OUTPUT_TAIL).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        text = exc.read(OUTPUT_TAIL).decode("utf-8", "replace") if exc.fp else ""
        if 300 <= exc.code < 400:
            target = exc.headers.get("Location", "nowhere") if exc.headers else "nowhere"
            return Attempt(False, started, time.time(), exc.code, text,
                           f"HTTP {exc.code} redirect to {target} not followed: configure the subscriber's URL")
        return Attempt(False, started, time.time(), exc.code, text, f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Attempt(False, started, time.time(), None, "", f"web call failed: {reason}")
    if 200 <= status < 300:
        return Attempt(True, started, time.time(), status, text)
    return Attempt(False, started, time.time(), status, text, f"HTTP {status}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


Performer = Callable[[EventContext, float], Attempt]  # an action kind a layer above delivers (it knows its home)


def perform(action: str, target: str, event: EventContext, timeout: float, cwd: str | None = None,
            headers: Mapping[str, str] | None = None, others: Mapping[str, Performer] | None = None) -> Attempt:
    """Run one subscriber action of kind ``action`` for ``event``: a command, a program or a web
    call here; a kind that a layer above delivers (the sync back to OMi) through ``others``,
    which the daemon hands the Event Manager."""
    if action == ActionKind.COMMAND:
        return run_command(target, event, timeout, cwd)
    if action == ActionKind.PROGRAM:
        return run_program(target, event, timeout, cwd)
    if action == ActionKind.WEB:
        return run_web(target, event, timeout, headers)
    if others and action in others:
        return others[action](event, timeout)
    now = time.time()
    return Attempt(False, now, now, error=f"action {action!r} is run by the supervisor, not here")
