"""Commands of the supervisor: start, stop, status, restart, close."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import rich_click as click

from .. import store
from ..client import control, launcher
from ..delivery import backsync
from ..errors import AlreadyRunning, BridgeError, NotRunning, UsageError
from ..eventcore.nodes import short_checksum
from ..eventcore.retention import parse_age
from ..home import Home
from ..model import DeliveryStatus, HostState, ListenerState, NodeState, SupervisorState
from ..wording import paused_since, restarted
from .base import core, home_of, main, print_json
from .report import describe_fault, fail

OPEN, FAILED = DeliveryStatus.OPEN.value, DeliveryStatus.FAILED.value
CLOSE_COMMIT_EVERY = 2000  # `close -`: IDs per commit (each commit wakes the Event Manager)


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--foreground", is_flag=True, help="Stay attached and log to stderr (for systemd and `make run`).")
@click.option("--no-stderr-log", "no_stderr_log", is_flag=True, hidden=True)
@click.option("--workers", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Action lanes delivering command, program and web subscribers in parallel.")
@click.option("--per-subscriber", "per_subscriber", type=click.IntRange(min=1, max=64), default=None,
              help="Action lanes one subscriber may hold at once (default: half of --workers, at least 1), "
                   "so that a slow destination leaves the others free.")
@click.option("--poll", type=click.FloatRange(min=0.05, max=3600), default=30.0, show_default=True,
              help="Seconds between looks for due work when no doorbell rings (the seed's 30-second cycle).")
@click.option("--retention", default="30d", show_default=True, metavar="AGE",
              help="Prune done deliveries and finished events older than this, hourly; 0 keeps everything.")
@click.option("--metrics-textfile", type=click.Path(dir_okay=False), default=None,
              help="Keep this Prometheus textfile up to date (node_exporter's textfile collector).")
@click.option("--metrics-interval", type=click.FloatRange(min=1, max=86400), default=15.0, show_default=True,
              help="Seconds between refreshes of the metrics textfile.")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Serve OMi's Event Synchronization interface and the event API on this address "
                   "(default: listen.address in conf/ombridge.conf; nothing listens unless asked).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, resolve_path=True), default=None,
              help="PEM certificate (chain) for HTTPS; with it, plain HTTP is refused.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, resolve_path=True), default=None,
              help="PEM private key of --tls-cert (keep it chmod 600).")
@click.option("--max-body", type=click.IntRange(min=1024), default=None, metavar="BYTES",
              help="Largest request body accepted (default 1048576); larger ones get 413.")
@click.option("--listen-processes", "listen_processes", type=click.IntRange(min=0, max=16), default=None,
              metavar="N", help="Serve HTTP from N processes of its own beside the supervisor; 0: in the "
                                "supervisor (default: listen.processes in conf/ombridge.conf, else 2 on a machine "
                                "of 2 cores or more). See docs/omi.md.")
@click.option("--perl", "perl", metavar="PATH", default=None,
              help="The perl that runs the script (default: [ombacksync] perl in conf/ombridge.conf, else perl).")
@click.pass_context
def start(ctx: click.Context, foreground: bool, no_stderr_log: bool, workers: int, per_subscriber: int | None,
          poll: float, retention: str,
          metrics_textfile: str | None, metrics_interval: float, listen: str | None, tls_cert: str | None,
          tls_key: str | None, max_body: int | None, listen_processes: int | None, perl: str | None) -> None:
    """Start the supervisor: the Event Manager, ombacksync and, when asked, the HTTP listener.

    Returns once it is up, or fails with the reason. The listener's settings may also live in the
    home's `conf/ombridge.conf` (docs/omi.md). Example: `ombridge start --listen 0.0.0.0:8443
    --tls-cert /etc/ombridge/cert.pem --tls-key /etc/ombridge/key.pem`
    """
    from ..web import config as web_config

    home = home_of(ctx)
    keep = parse_age(retention)
    textfile = os.path.abspath(metrics_textfile) if metrics_textfile else None
    if textfile and not os.path.isdir(os.path.dirname(textfile)):
        raise UsageError(f"--metrics-textfile {textfile}: the folder {os.path.dirname(textfile)} does not exist")
    listen_config = web_config.resolve(home, listen, tls_cert, tls_key, max_body,  # refused here, before spawning
                                       processes=listen_processes)
    if foreground:
        from ..daemon import (
            supervisor,  # the daemon, loaded only by the process that runs it
        )

        make_listener = None
        if listen_config is not None:  # (the web stack is imported only here: nothing of it loads unless asked)
            from ..web.listener import Listener
            from ..web.workers import ListenerProcesses

            def make_listener(home: Home, **hooks: Any) -> Listener | ListenerProcesses:
                if listen_config.processes:
                    return ListenerProcesses(home, listen_config, **hooks)
                return Listener(home, listen_config, **hooks)

        if per_subscriber is not None and per_subscriber > workers:
            raise UsageError(f"--per-subscriber {per_subscriber} is more than the {workers} action lanes (--workers)")
        sup = supervisor.Supervisor(home, workers=workers, per_subscriber=per_subscriber, poll=poll,
                                    log_to_stderr=not no_stderr_log,
                                    retention=keep or None, metrics_textfile=textfile,
                                    metrics_interval=metrics_interval, listen=make_listener, perl=perl)
        sys.exit(sup.run())
    listen_options = [*(["--listen", listen] if listen else []), *(["--tls-cert", tls_cert] if tls_cert else []),
                      *(["--tls-key", tls_key] if tls_key else []),
                      *(["--max-body", str(max_body)] if max_body is not None else []),
                      *(["--listen-processes", str(listen_processes)] if listen_processes is not None else [])]
    if per_subscriber is not None and per_subscriber > workers:
        raise UsageError(f"--per-subscriber {per_subscriber} is more than the {workers} action lanes (--workers)")
    options = ["--workers", str(workers), *(["--per-subscriber", str(per_subscriber)] if per_subscriber else []),
               "--poll", str(poll), "--retention", retention,
               "--metrics-interval", str(metrics_interval), *(["--metrics-textfile", textfile] if textfile else []),
               *listen_options, *(["--perl", perl] if perl else [])]
    try:
        status = launcher.spawn(home, options)
    except AlreadyRunning as exc:
        click.echo(f"ombridge: {exc}", err=True)
        return
    _report_started(status)


def _report_started(status: dict) -> None:
    ob = status["ombacksync"]
    click.echo(f"ombridge started (pid {status['supervisor']['pid']}); ombacksync {ob['state']}")
    web = status.get("listener", {})
    if web.get("state") == ListenerState.LISTENING.value:
        click.echo(f"listening on {web['url']} (OMi base {web['url']}{web['omi_base']})")
        click.echo(f"console: {web['url']}/ui/ (log in as a user of `ombridge user add`)")
    if ob["state"] not in (HostState.RUNNING.value, HostState.STARTING.value):
        click.echo(f"ombridge: warning: ombacksync is {ob['state']}: {ob['last_error']}\n"
                   "Close deliveries wait until the script is fixed and `ombridge restart ombacksync`.", err=True)


@main.command()
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the supervisor after the deliveries in flight; the rest stay open.

    A second `stop` while it is stopping stops it at once. Example: `ombridge stop`
    """
    try:
        pid = launcher.stop(home_of(ctx))
    except NotRunning:
        click.echo("ombridge is not running")
        return
    click.echo(f"ombridge stopped (pid {pid})")


class LsbCommand(click.RichCommand):
    """A command whose usage errors exit 4 ("unknown"), not 2, as LSB asks of a status command."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = 4
            raise


@main.command(cls=LsbCommand)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the supervisor, ombacksync, the Event Manager, the listener and the backlog.

    Exit codes (LSB): 0 running, 1 running but degraded (the reasons are shown), 3 not running,
    4 unknown. Example: `ombridge status --json`
    """
    try:
        home = home_of(ctx)
    except BridgeError as exc:
        fail(str(exc), 4)  # LSB: status unknown
    try:
        result = control.request(home.root, "status", timeout=10)
        code = 1 if result.get("degraded") else 0
    except NotRunning:
        result = launcher.offline_status(home)
        code = 3
    except BridgeError as exc:  # it did not answer: nobody can say
        fail(str(exc), 4)
    if as_json:
        print_json(result)
    else:
        _print_status(result)
    sys.exit(code)


def _print_status(s: dict) -> None:
    sup, ob, em, bl = s["supervisor"], s["ombacksync"], s["eventmanager"], s["backlog"]
    if sup["state"] == SupervisorState.STOPPED.value:
        click.echo("supervisor    stopped (not running)")
    else:
        up = time.time() - sup["started_at"]
        click.echo(f"supervisor    {sup['state']}, pid {sup['pid']}, up {up:.0f}s, home {sup['home']}")
        line = f"ombacksync    {ob['state']}"
        if ob.get("init_running_for") is not None:
            line += f", Init running for {ob['init_running_for']:.0f}s"
        if (ob.get("size") or 1) > 1:
            line += f", {ob['size']} children" + (f", perl {ob['perl']}" if ob.get("perl") else "")
        elif ob.get("pid"):
            line += f", pid {ob['pid']}" + (f", perl {ob['perl']}" if ob.get("perl") else "")
        line += f", restarts after faults {ob['restarts']}"
        if ob.get("retry_in") is not None:
            line += f", next try in {ob['retry_in']:.0f}s"
        click.echo(line)
        if ob.get("last_error") and ob["state"] != HostState.RUNNING.value:
            click.echo("              " + ob["last_error"].replace("\n", "\n              "))
        _print_children(ob.get("children") or [])
        click.echo(f"eventmanager  {em['state']}, {em['workers']} action lane(s)"
                   + (f" ({em['per_subscriber']} at most per subscriber)" if em.get("per_subscriber") else "")
                   + f", delivered {em['delivered']}, "
                   f"failed attempts {em['failed_attempts']}")
        if em.get("lanes"):
            click.echo("              lanes: " + ", ".join(f"{lane['name']} {lane['state']}" for lane in em["lanes"]))
        web = s.get("listener", {"state": ListenerState.OFF.value})
        if web["state"] == ListenerState.OFF.value:
            click.echo("listener      off (ombridge start --listen HOST:PORT)")
        else:
            where = (f"in {web['serving']} of {web['processes']} processes" if web.get("processes") else
                     "in the supervisor")
            click.echo(f"listener      {web['state']}, {web['url']}{web['omi_base']}, "
                       f"{'TLS' if web['tls'] else 'plain HTTP'}, {where}, {web['requests']} requests served, "
                       f"{web['events']} events in {web['commits']} commits, {web['auth_failures']} auth failures")
    click.echo(f"backlog       {bl[OPEN]} open, {bl[FAILED]} failed" if bl else "backlog       unknown (the event core "
               "cannot be read)")
    for p in s.get("paused") or ():
        click.echo(f"paused        subscriber {p['id']} ({p['action']}), {paused_since(p['paused_at'], p['paused_by'])}, "
                   f"holding {p['held']} open; ombridge subscriber resume {p['id']}")
    _print_nodes(s.get("nodes") or [])
    for reason in s.get("degraded") or ():
        click.echo(f"degraded      {reason}")


def _print_children(children: list[dict]) -> None:
    # Only with several children (`[ombacksync] children`): one is the line above.
    if len(children) < 2:
        return
    for child in children:
        line = f"  child {child['index']:<5} {child['state']}"
        if child.get("pid"):
            line += f", pid {child['pid']}"
        line += f", {child['closes']} Closes"
        current = child.get("current")
        if current:
            line += f", on {current['id']!r} for {current['seconds']:.1f}s"
        if child.get("retry_in") is not None:
            line += f", next try in {child['retry_in']:.0f}s"
        click.echo(line)


def _print_nodes(nodes: list[dict]) -> None:
    # Only when the store is shared: on one box the one node is the supervisor above.
    if len(nodes) < 2:
        return
    for n, node in enumerate(nodes):
        seen = "" if node["state"] == NodeState.STOPPED.value else f", seen {node['seen_ago']:.0f}s ago"
        if abs(node.get("clock_offset") or 0.0) >= 1.0:
            seen += f", clock {node['clock_offset']:+.1f}s"
        click.echo(f"{'nodes' if n == 0 else '':14}{node['name']}: {node['state']}{seen}, {node['leases']} leases, "
                   f"pid {node['pid']} on {node['host']}, script {short_checksum(node['script_checksum'])}")


@main.command()
@click.argument("what", type=click.Choice(control.RESTARTABLE), default="ombacksync", required=False)
@click.pass_context
def restart(ctx: click.Context, what: str) -> None:
    """Restart ombacksync (the connector's `ovc -restart ombacksync`), the Event Manager, or all.

    The script is checked first: a broken one is refused with perl's message and the running
    ombacksync keeps serving. Example: `ombridge restart ombacksync`
    """
    result = control.request(home_of(ctx).root, "restart", timeout=control.RESTART_TIMEOUT + 30, what=what)
    click.echo(restarted(what, result))


@main.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--skip", type=click.IntRange(min=0), default=0, metavar="N",
              help="With `-`: skip the first N input lines (to resume a `close -` that was cut off: it says N).")
@click.pass_context
def close(ctx: click.Context, ids: tuple[str, ...], skip: int) -> None:
    """Close events: send `event/update {"ID": ID, "STATE": "closed"}` for each ID.

    Prints one event id per ID. `-` reads IDs from stdin, one per line, and stores them a few
    thousand per commit as they are read and checked, so that the first Closes run while the rest
    are stored (prints how many). If the event core fails on the way, it says which input lines
    were stored and how to resume (`--skip N`) without closing any of them twice.
    Example: `ombridge close EVT-1` or `ombridge close - < ids.txt`
    """
    home = home_of(ctx)
    from_stdin = ids == ("-",)
    if skip and not from_stdin:
        fail("--skip N is for `close -` (it skips input lines)", 2)
    chunks = _stdin_chunks(CLOSE_COMMIT_EVERY, skip) if from_stdin else [(list(ids), 0)]
    sent = refused_any = 0
    done_lines = skip  # every input line up to here is stored (or was refused by name)
    for chunk, last_line in chunks:
        good, refused = backsync.split_storable(chunk)
        for external_id, reason in refused:
            shown = external_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            click.echo(f"ombridge: error: not sent: ID '{shown}': {reason}", err=True)
        refused_any = refused_any or bool(refused)
        if good:
            try:
                results = backsync.close_events(core(ctx), good, cwd=str(home.root),
                                                on_stored=lambda: control.ring(home.root))
            except (BridgeError, OSError, *store.failures()) as exc:
                if from_stdin and not isinstance(exc, UsageError):
                    _cut_off(exc, sent, done_lines, last_line)
                raise
            sent += len(results)
            if not from_stdin:
                for r in results:
                    click.echo(r.event_id)
        done_lines = last_line
    if from_stdin:
        click.echo(f"{sent} closed events sent")
    if refused_any:
        sys.exit(2)


def _cut_off(exc: BaseException, sent: int, done: int, last_line: int) -> None:
    """``close -`` stopped by the event core: what was stored, and how to go on without closing
    any ticket twice (never a bare "try again", which would re-send everything stored)."""
    reason = str(exc) if isinstance(exc, BridgeError) else (describe_fault(exc) or str(exc))
    reason = reason.removesuffix(": try again")  # (not blindly: what follows says from where)
    said = [f"{reason.rstrip('.')}."]
    said.append(f"{sent:,} closed events were stored before that, from input lines 1 to {done:,}."
                if done else "Nothing was stored.")
    if store.failed_at_commit(exc):
        said.append(f"Input lines {done + 1:,} to {last_line:,} were being committed when the event core went "
                    f"away: they may or may not have been stored (look with `ombridge events list --topic "
                    f"event/update`); the lines after them were not.")
    else:
        said.append(f"Nothing from input line {done + 1:,} on was stored.")
    said.append(f"To go on from there: ombridge close --skip {done} - < FILE  (the same input).")
    fail(" ".join(said), 1)


def _stdin_chunks(size: int, skip: int) -> Any:
    """The IDs on stdin, ``size`` at a time as they arrive, each chunk with the number of the last
    input line it read (blank lines count, and are skipped); the first ``skip`` lines are skipped.
    An ID that is not UTF-8 is kept as such (surrogate escapes), to be refused by name."""
    chunk: list[str] = []
    number = 0
    for number, line in enumerate(sys.stdin.buffer, 1):
        if number <= skip:
            continue
        close_id = line.rstrip(b"\n").rstrip(b"\r")
        if close_id:
            chunk.append(close_id.decode("utf-8", "surrogateescape"))
            if len(chunk) == size:
                yield chunk, number
                chunk = []
    if chunk:
        yield chunk, number
