"""The differential compatibility suite's runners: one script, plain perl and ombridge, side by side.

A case is a script in ``cases/`` (``NAME.pl``, or a folder ``NAME/`` holding ``OMBackSync.pl`` and
the files that sit beside it). Lines ``# compat KEY: VALUE`` in the script say how to run it:

- ``ids``: the IDs to close, separated by `` | `` (default ``T-1 | T-2``);
- ``unordered``: files (relative to the home) compared as sorted lines, because several
  processes write them concurrently;
  ``<output>`` among them compares the script's standard streams that way;
- ``runners``: which of ``try`` and ``supervisor`` run the case (default both);
- ``retries``: the retries the supervisor's backsync gets (default 0: one attempt each);
- ``integrations``: names of ``integrations/NAME.pl`` beside the script, merged into it with
  ``ombridge integration add`` in both homes before the runs (both run the merged file);
- ``skip``: ``tails`` when which call a line lands in depends on timing (a background writer);
- ``differs``: ``CALL => START`` for a call plain perl never finishes (``exec`` replaces the
  program), whose ombridge outcome must start with ``START`` (docs/compatibility.md).

Every run gets a fresh home with the case's files in ``conf/backsync/`` and ``tmp/``, and runs
with ``OvDataDir`` = the home and the home as working directory. Compared: the outcome of every
call (Init and each Close: OK, or the error message), every file under the home except the
bridge's own (``datafiles/``, ``log/``, ``run/``), that no process of the home is left, the
script's standard streams (plain perl's STDOUT and STDERR, one pipe as a service manager gives
them, against the lines ombridge logged for the script), and each Close's output tail (the last
4096 bytes the call's streams got, against its attempt's).

Normalisations (the only ones; docs/compatibility.md lists them): the home's path becomes
``<home>`` (each run has its own home); ``YYYY-MM-DD HH:MM:SS`` becomes ``<time>``; files named
in ``unordered`` are compared as sorted lines. Output is read as the documented rule says
(:func:`text_of`): lines end at ``\n`` (a ``\r`` before it dropped), bytes are UTF-8 where they
are valid UTF-8 and Latin-1 where they are not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import OMBRIDGE, run_ombridge

from bridge.ombacksync import protocol

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
REFERENCE = HERE / "reference.pl"
BUNDLED = HERE.parent / "fixtures" / "example.pl"  # the tests' copy of the shipped example
BRIDGE_OWN = ("datafiles", "log", "run")
GRACE = 10.0  # ombridge's default stop grace: processes of the script get this long after a stop
_META = re.compile(r"^# compat (\w+): (.*)$", re.M)
_TIME = re.compile(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
MARK = b"\0compat: end of call\0"  # reference.pl --marks: where each call's output ends
TAIL = 4096  # bytes of a Close's output its attempt keeps
OUTPUT = "<output>"  # in ``unordered``: the script's standard streams
_TRY_LINE = re.compile(r"perl\[\d+\]: (.*)")
_LOG_LINE = re.compile(r"\S+ \S+ [A-Z]+ ombridge\.script: perl\[\d+\]: (.*)")


@dataclass
class Case:
    """One script and how to run it."""

    name: str
    files: dict[str, bytes]  # relative to conf/backsync/
    ids: list[str] = field(default_factory=lambda: ["T-1", "T-2"])
    unordered: list[str] = field(default_factory=list)
    runners: list[str] = field(default_factory=lambda: ["try", "supervisor"])
    retries: int = 0
    integrations: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    differs: dict[str, str] = field(default_factory=dict)  # "Close ID" -> the start of ombridge's outcome

    @property
    def script(self) -> bytes:
        """The case's OMBackSync.pl."""
        return self.files["OMBackSync.pl"]


@dataclass
class Run:
    """What one run left behind."""

    outcomes: list[str]  # "Init OK", "Close <hex> ERR <message>"
    files: dict[str, bytes]
    leftovers: list[int]  # processes of the home still running after stop + grace
    output: list[str] = field(default_factory=list)  # the script's standard streams, line by line
    tails: dict[str, str] = field(default_factory=dict)  # "Close <hex>" -> the call's output tail


def load_cases() -> list[Case]:
    """Every case in ``cases/``, by name, and the bundled example script."""
    cases = []
    for path in [*sorted(CASES.iterdir()), BUNDLED]:
        if path.suffix == ".pl":
            files = {"OMBackSync.pl": path.read_bytes()}
        elif path.is_dir():
            files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
        else:
            continue
        case = Case("bundled_example" if path == BUNDLED else path.stem if path.suffix else path.name, files)
        for key, value in _META.findall(files["OMBackSync.pl"].decode("utf-8", "surrogateescape")):
            if key == "ids":
                case.ids = [i.strip() for i in value.split(" | ")]
            elif key == "unordered":
                case.unordered = value.split()
            elif key == "runners":
                case.runners = value.split()
            elif key == "retries":
                case.retries = int(value)
            elif key == "integrations":
                case.integrations = value.split()
            elif key == "skip":
                case.skip = value.split()
            elif key == "differs":
                call, _, start = value.partition(" => ")
                case.differs[call.strip()] = start.strip()
            else:
                raise ValueError(f"case {case.name}: unknown metadata {key!r}")
        cases.append(case)
    return cases


def make_home(root: Path, case: Case) -> Path:
    """A fresh home holding the case's files, laid out like the connector's data folder."""
    for rel, data in case.files.items():
        target = root / "conf" / "backsync" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    os.chmod(root / "conf" / "backsync" / "OMBackSync.pl", 0o700)
    (root / "tmp").mkdir(exist_ok=True)
    for name in case.integrations:  # both runs run the merged file
        source = root / "conf" / "backsync" / "integrations" / f"{name}.pl"
        run_ombridge(root, "integration", "add", name, str(source))
    return root


def shebang_words(script: bytes) -> list[str]:
    """What the kernel passes to perl for ``./OMBackSync.pl``: the rest of the #! line, one word."""
    first = script.split(b"\n", 1)[0].decode("utf-8", "replace")
    m = re.match(r"#!\s*(\S+)[ \t]+(.*\S)", first)
    return [m[2]] if m and "perl" in os.path.basename(m[1]) else []


def home_processes(root: Path) -> list[int]:
    """Live processes (not zombies) working in this home: the scripts run with the home as their
    working directory, and their children inherit it. (The environment is no witness: a perl
    that sets ``$0`` may overwrite it in /proc.)"""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            state = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cwd == str(root) and state != b"Z":
            found.append(int(entry.name))
    return found


def _wait_gone(root: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := home_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def collect(root: Path, case: Case) -> dict[str, bytes]:
    """Every file under the home but the bridge's own, normalised."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in BRIDGE_OWN or str(rel) == "conf/ombridge.conf":
            continue
        files[str(rel)] = _normalised(path.read_bytes(), root, str(rel) in case.unordered)
    return files


def _normalised(data: bytes, root: Path, unordered: bool = False) -> bytes:
    data = _TIME.sub(b"<time>", data.replace(str(root).encode(), b"<home>"))
    return b"\n".join(sorted(data.splitlines())) if unordered else data


def text_of(data: bytes, cut: bool = False) -> str:
    """Output bytes as the documented rule reads them (docs/protocol.md, "Output"): UTF-8 where
    they are valid UTF-8, each other byte as Latin-1; a tail ``cut`` inside a character starts
    at the next one. Written here, not imported, so that the suite holds the bridge to the rule."""
    if cut:
        skip = 0
        while skip < 3 and skip < len(data) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    out, rest = [], data
    while rest:
        try:
            out.append(rest.decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            out.append(rest[:exc.start].decode("utf-8") + rest[exc.start:exc.end].decode("latin-1"))
            rest = rest[exc.end:]
    return "".join(out)


def output_lines(data: bytes, root: Path, case: Case) -> list[str]:
    """A stream's lines as ombridge's log holds them, normalised."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts = [text_of(_normalised(line.rstrip(b"\r"), root)) for line in lines]
    return sorted(texts) if OUTPUT in case.unordered else texts


def _logged_lines(text: str, pattern: re.Pattern[str], root: Path, case: Case) -> list[str]:
    found = [m[1] for line in text.split("\n") if (m := pattern.fullmatch(line))]
    data = "\n".join(found).encode("utf-8", "surrogateescape")
    lines = [line.decode("utf-8", "surrogateescape") for line in _normalised(data, root).split(b"\n")] if found else []
    return sorted(lines) if OUTPUT in case.unordered else lines


def _outcome(op: str, event_id: str | None, ok: bool, message: str | None, root: Path) -> str:
    what = op if event_id is None else f"{op} {event_id.encode('utf-8', 'surrogateescape').hex()}"
    return f"{what} OK" if ok else f"{what} ERR {(message or '').replace(str(root), '<home>')}"


def call_key(call: str) -> str:
    """``Close ID`` as outcomes and tails name it: ``Close <hex of the ID>``."""
    op, _, event_id = call.partition(" ")
    return _outcome(op, event_id or None, True, None, Path("/"))[:-3]


def _read_all(fd: int, into: bytearray) -> threading.Thread:
    def pump() -> None:
        with os.fdopen(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                into.extend(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run_reference(root: Path, case: Case) -> Run:
    """The script under the plain-perl driver (``reference.pl``), its STDOUT and STDERR one pipe."""
    record = root.parent / f"{root.name}.outcomes"
    env = {k: v for k, v in os.environ.items() if k not in ("OMBRIDGE_HOME",)} | {"OvDataDir": str(root)}
    read_end, write_end = os.pipe()
    stream = bytearray()
    reader = _read_all(read_end, stream)
    try:
        subprocess.run(["perl", *shebang_words(case.script), str(REFERENCE), "--marks", str(record),
                        str(root / "conf" / "backsync" / "OMBackSync.pl"), *case.ids],
                       cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=write_end,
                       stderr=write_end, start_new_session=True, timeout=60)
    finally:
        os.close(write_end)
    leftovers = _wait_gone(root, GRACE)  # what the script started may finish, as under ombridge
    reader.join(timeout=5)
    outcomes = []
    for line in record.read_bytes().splitlines() if record.exists() else []:
        head, _, message = line.partition(b" ERR ")
        parts = head.split(b" ")
        op = parts[0].decode()
        event_id = bytes.fromhex(parts[1].decode()).decode("utf-8", "surrogateescape") if op == "Close" else None
        ok = not message and head.endswith(b" OK")
        outcomes.append(_outcome(op, event_id, ok, protocol.decode_message(message), root))
    data = bytes(stream)
    segments = data.split(MARK)  # the load, Init, each Close, then the stop
    tails = {}
    for n, event_id in enumerate(case.ids):  # the Closes that ran: ended, or never finished (differs)
        key = call_key(f"Close {event_id}")
        if n + 2 < len(segments) and (key + " OK" in outcomes or f"Close {event_id}" in case.differs
                                      or any(o.startswith(key + " ERR ") for o in outcomes)):
            tails[key] = text_of(_normalised(segments[n + 2][-TAIL:], root), len(segments[n + 2]) > TAIL)
    return Run(outcomes, collect(root, case), leftovers, output_lines(data.replace(MARK, b""), root, case), tails)


def _omb(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_ombridge(root, *args, check=False, timeout=timeout)


def _start_failure(text: str, root: Path) -> str | None:
    """The reference's outcome line for what ombridge reported of a failed start, if it failed:
    "Init ERR <perl's message>" or, for a script that died while loading, "Load ERR <it>"."""
    for op, pattern in (("Init", r"OMBackSync\('Init'\) died: (.*)"), ("Load", r"could not be loaded: (.*)")):
        m = re.search(pattern, text, re.S)
        if m:
            return _outcome(op, None, False, m[1].strip(), root)
    return None


def run_try(root: Path, case: Case) -> Run:
    """The script through ``ombridge try``; what it logged of the script is on its stderr."""
    environ = {k: v for k, v in os.environ.items() if k not in ("OvDataDir", "OMBRIDGE_HOME")}
    r = subprocess.run([OMBRIDGE, "--home", str(root), "try", "--json", *case.ids], capture_output=True,
                       timeout=120, env=environ, stdin=subprocess.DEVNULL)
    stderr = r.stderr.decode("utf-8", "surrogateescape")
    leftovers = home_processes(root)  # try returns only after stop + grace
    failure = _start_failure(stderr, root)
    tails = {}
    if r.returncode not in (0, 1) or failure:
        outcomes = [failure or _outcome("Init", None, False, stderr.strip(), root)]
    else:
        results = json.loads(r.stdout)
        assert [o["id"] for o in results] == case.ids, (results, case.ids)
        outcomes = ["Init OK"] + [_outcome("Close", o["id"], o["ok"], o["error"], root) for o in results]
        tails = {call_key(f"Close {o['id']}"): _normalised(o.get("output", "").encode("utf-8", "surrogateescape"), root)
                 .decode("utf-8", "surrogateescape") for o in results}
    return Run(outcomes, collect(root, case), leftovers, _logged_lines(stderr, _TRY_LINE, root, case), tails)


def run_supervisor(root: Path, case: Case) -> Run:
    """The script through a running supervisor: close, start, wait for every delivery, stop."""
    assert _omb(root, "close", *case.ids).returncode == 0
    assert _omb(root, "subscriber", "set", "1", "--retries", str(case.retries)).returncode == 0
    started = _omb(root, "start")
    assert started.returncode == 0, started.stderr
    init = "Init OK"
    try:
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(_omb(root, "status", "--json").stdout)["ombacksync"]
            if status["state"] == "backoff" and status["last_error"] and status["restarts"] == 0:
                init = (_start_failure(status["last_error"], root)
                        or _outcome("Init", None, False, status["last_error"], root))
                deliveries: list[dict] = []
                break
            deliveries = json.loads(_omb(root, "deliveries", "list", "--limit", "1000", "--json").stdout)
            if all(d["status"] in ("done", "failed") for d in deliveries) and len(deliveries) == len(case.ids):
                break
            assert time.monotonic() < deadline, (status, deliveries)
            time.sleep(0.1)
        tails = {} if "tails" in case.skip else _attempt_tails(root, deliveries)
    finally:
        _omb(root, "stop")
    leftovers = _wait_gone(root, GRACE + 5)
    by_id = {d["key"]["ID"]: d for d in deliveries}
    outcomes = [init] + [_outcome("Close", i, by_id[i]["status"] == "done", by_id[i]["last_error"], root)
                         for i in case.ids if i in by_id]
    log = b"".join(p.read_bytes() for p in sorted(root.joinpath("log").glob("ombridge.log*"), reverse=True))
    output = _logged_lines(log.decode("utf-8", "surrogateescape"), _LOG_LINE, root, case)
    return Run(outcomes, collect(root, case), leftovers, output, tails)


def _attempt_tails(root: Path, deliveries: list[dict]) -> dict[str, str]:
    """Each Close's output tail: its delivery's last attempt (``deliveries show``)."""
    tails = {}
    for d in deliveries:
        shown = json.loads(_omb(root, "deliveries", "show", str(d["id"]), "--json").stdout)
        attempts = shown["attempt_log"]
        output = attempts[-1]["output"] if attempts else ""
        tails[call_key(f"Close {d['key']['ID']}")] = _normalised(
            (output or "").encode("utf-8", "surrogateescape"), root).decode("utf-8", "surrogateescape")
    return tails


RUNNERS = {"try": run_try, "supervisor": run_supervisor}


def fresh(root: Path, case: Case) -> Path:
    """A clean home at ``root`` for ``case``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return make_home(root, case)
