"""How perl is run for a script: which perl, its switches, ``@INC`` and environment, and ``perl -c``.

The check and the real child see the same things (DESIGN.md "Plain perl is the reference"):

- the ``#!`` switches of the script (``-w``, ``-T``, ``-t``, ``-C…``, …) on the command line, since
  perl refuses ``-T`` and ``-C`` that appear only on the ``#!`` line of a file it did not start with;
- perl's own ``@INC`` first and the script's folder *after* it (``-I`` and ``PERL5LIB`` would put
  it first, and a team's ``Config.pm`` would shadow perl's ``Config``);
- the bridge's environment with ``OvDataDir`` = the home, and ``OvInstallDir`` when it is set.

Settings come from ``conf/ombridge.conf`` in the home (TOML, table ``[ombacksync]``; the
listener's ``[listen]`` shares the file) and the command line (``--perl``), see :class:`HostSettings`.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .. import bundled, conf
from ..errors import BridgeError, ScriptSyntaxError, UsageError
from ..home import Home

PERL_DIR = bundled.perl_dir()
HOST_SCRIPT = PERL_DIR / "ombridge_host.pl"
CHECK_INC = PERL_DIR / "check"  # OMBridgeCheck.pm: appends the script's folder to @INC for perl -c
CHECK_TIMEOUT = 60.0  # seconds `perl -c` may take

# Switch letters honoured from the #! line; the others (-n, -p, -a, -i, -0, -x, -e, -s, -d, …)
# would turn the host itself into something else and are ignored (docs/compatibility.md).
_FLAGS = "wWXTt"
_WITH_ARGUMENT = "MmI"  # -Mmodule, -mmodule, -Idir: the rest of the word is the argument
_KINDS = {"perl": str, "ov_install_dir": str, "output_tails": bool, "children": int}  # the others: seconds
MAX_CHILDREN = 64


@dataclass(frozen=True)
class HostSettings:
    """What the operator may set for ombacksync (``conf/ombridge.conf``, table ``[ombacksync]``)."""

    perl: str = "perl"  # e.g. the connector's /opt/OV/nonOV/perl/a/bin/perl
    init_timeout: float = 300.0  # seconds loading the script plus OMBackSync('Init') may take
    stop_grace: float = 10.0  # seconds the script and what it started get to finish on a stop
    start_backoff_cap: float = 300.0  # longest wait between two tries of a failing start
    ov_install_dir: str | None = None  # $OvInstallDir for scripts that use it
    # Each Close keeps the tail of its own output (docs/protocol.md, "Output"); off, the script's
    # output only goes to the log, and a Close costs a flush check and two system calls less.
    output_tails: bool = True
    # Persistent perl children running the script side by side (docs/operations.md, "Several
    # children"); 1 is the connector's own ombacksync, and the default.
    children: int = 1

    def with_perl(self, perl: str | None) -> HostSettings:
        """These settings, with ``perl`` when one is given (``--perl`` beats the file)."""
        return replace(self, perl=perl) if perl else self


def load_settings(home: Home, perl: str | None = None) -> HostSettings:
    """The home's settings (defaults when it has no ``conf/ombridge.conf``), ``perl`` overriding."""
    path = conf.path(home.root)
    table = conf.table(home.root, "ombacksync")
    known = {f.name: f for f in fields(HostSettings)}
    values: dict[str, object] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UsageError(f"{path}: unknown setting {key!r} in [ombacksync] (known: {', '.join(known)})")
        want = _KINDS.get(name, float)
        if want is float and isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            values[name] = float(value)
        elif want is str and isinstance(value, str) and value or want is bool and isinstance(value, bool):
            values[name] = value
        elif want is int and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CHILDREN:
            values[name] = value
        else:
            what = {float: "positive number", str: "path", bool: "true or false",
                    int: f"whole number from 1 to {MAX_CHILDREN}"}[want]
            raise UsageError(f"{path}: [ombacksync] {key} must be a {what}")
    return HostSettings(**values).with_perl(perl)  # type: ignore[arg-type]


def shebang_switches(script: Path) -> list[str]:
    """The switches of the script's ``#!`` line that perl would honour, one per argument.

    ``#!/usr/bin/perl -Tw`` gives ``["-T", "-w"]``; ``-CSD`` stays ``-CSD``. Nothing when the
    first line is no ``#!`` line naming perl.
    """
    try:
        with open(script, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace")
    except OSError:
        return []
    match = re.match(r"#!\S*perl\S*((?:[ \t]+\S+)*)", first.rstrip("\r\n")) or re.match(
        r"#!\S+[ \t]+\S*perl\S*((?:[ \t]+\S+)*)", first.rstrip("\r\n"))  # #!/usr/bin/env perl -w
    if not match:
        return []
    switches: list[str] = []
    for word in match[1].split():
        if not word.startswith("-") or word == "-" or word == "--":
            break  # perl stops at the first non-switch word
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in _FLAGS:
                switches.append("-" + letter)
            elif letter == "C":
                flags = re.match(r"[0-9IOEioSDLAa]*", letters)
                assert flags is not None
                switches.append("-C" + flags[0])
                letters = letters[len(flags[0]):]
            elif letter == "l":
                digits = re.match(r"[0-7]*", letters)
                assert digits is not None
                switches.append("-l" + digits[0])
                letters = letters[len(digits[0]):]
            elif letter in _WITH_ARGUMENT:
                if letters:
                    switches.append("-" + letter + letters)
                letters = ""
            else:
                letters = ""  # an unsupported switch: ignore it and whatever is glued to it
    return switches


def perl_env(home: Home, settings: HostSettings) -> dict[str, str]:
    """The environment of every perl this home runs (check and child alike)."""
    env = home.perl_env()
    if settings.ov_install_dir:
        env["OvInstallDir"] = settings.ov_install_dir
    return env


def script_path(script: Path) -> str:
    """The script's absolute path as the child gets it (``$0``): symbolic links kept."""
    return os.path.abspath(script)


def host_command(script: Path, settings: HostSettings, reply_fd: int, host_script: Path = HOST_SCRIPT,
                 mark: str | None = None) -> list[str]:
    """The command line of the persistent child (``mark``: the end-of-call mark it writes on its
    output, docs/protocol.md "Output"; none without)."""
    return [settings.perl, *shebang_switches(script), str(host_script), str(reply_fd), script_path(script),
            *([mark] if mark else [])]


def check_command(script: Path, settings: HostSettings) -> list[str]:
    """The command line of ``perl -c`` for ``script``: the child's switches and ``@INC``."""
    folder = os.path.dirname(script_path(script)).encode("utf-8", "surrogateescape").hex()
    # The folder travels hex-encoded: commas, quotes and spaces in a path cannot break -M's syntax.
    return [settings.perl, *shebang_switches(script), f"-I{CHECK_INC}", f"-MOMBridgeCheck={folder}", "-c",
            script_path(script)]


def check_syntax(script: Path, home: Home, settings: HostSettings | None = None,
                 timeout: float = CHECK_TIMEOUT) -> str:
    """``perl -c`` the script with the child's switches, ``@INC`` and environment; returns perl's text.

    Raises :class:`ScriptSyntaxError` with perl's message, verbatim, when it does not compile or
    when compiling outlives ``timeout`` (a BEGIN block that waits). Through ``subprocess``, not
    ``sh``: importing ``sh`` alone costs ~125 ms, each check ~6x the CPU (docs/decisions.md).
    """
    settings = settings or HostSettings()
    if not script.is_file():
        # A script deleted under a running bridge is, for the next start, as bad as a broken one.
        raise ScriptSyntaxError(str(script), f"no script at {script}")
    try:
        result = subprocess.run(check_command(script, settings), env=perl_env(home, settings), cwd=str(home.root),
                                timeout=timeout, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired as exc:
        raise ScriptSyntaxError(str(script), f"perl -c did not finish within {timeout:g}s "
                                             "(does a BEGIN block or a module it loads wait for something?)") from exc
    except FileNotFoundError as exc:
        raise BridgeError(f"perl not found: {settings.perl}") from exc
    except OSError as exc:
        raise BridgeError(f"cannot run {settings.perl}: {exc.strerror or exc}") from exc
    text = result.stdout.decode("utf-8", "backslashreplace")
    if result.returncode != 0:
        raise ScriptSyntaxError(str(script), text.strip() or f"perl -c ended with status {result.returncode}, saying nothing")
    return text
