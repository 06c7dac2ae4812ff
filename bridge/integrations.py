"""Integrations that share the one ``OMBackSync.pl``, merged in and removed again by name.

The connector allows one ``OMBackSync.pl``: every integration merges its code into it and removes
it when uninstalled. ombridge keeps them in one managed region at the end of the script (before
``__END__``/``__DATA__`` if there is one), below whatever was written by hand:

    # >>> ombridge integrations: managed by `ombridge integration`; edit outside these markers
    # --- integration vendor-a (from /path/vendor-a.pl, 2026-11-22 10:00:00)
    { package OMBridge::Integration::vendor_a;
    #line 1 "integration vendor-a"
    ...the integration's OMBackSync.pl, unchanged...
    }
    # --- end of integration vendor-a
    # --- dispatcher
    ...
    # <<< ombridge integrations

Each integration lives in a package of its own, so its ``sub OMBackSync``, helpers, lexicals and
``our`` globals do not clash. The dispatcher, run when the file is loaded, keeps the hand-written
``OMBackSync`` (if any) and installs a ``main::OMBackSync`` that calls it and then every
integration's, each in ``eval``: one that dies does not keep the others from being called, and the
error names the ones that failed. A result that would not pass ``perl -c`` is never written; writes
are atomic, keep the file's mode and owner, and keep the previous version as ``OMBackSync.pl.bak``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from .errors import BridgeError, NotFound, ScriptSyntaxError, UsageError
from .home import Home
from .perlhost import check_syntax

BEGIN = "# >>> ombridge integrations: managed by `ombridge integration`; edit outside these markers"
END = "# <<< ombridge integrations"
_BLOCK = re.compile(r"^# --- integration (?P<name>\S+) \((?P<info>.*)\)\n(?P<body>.*?)^# --- end of integration (?P=name)\n",
                    re.M | re.S)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_DATA = re.compile(r"^__(?:END|DATA)__[ \t]*\r?$", re.M)
_DEFINES = re.compile(r"^\s*sub\s+OMBackSync\b", re.M)

DISPATCHER = r"""# --- dispatcher: OMBackSync calls the script's own OMBackSync (if any), then each integration's
#line 1 "ombridge dispatcher"
{
    no warnings 'redefine';
    no strict 'refs';
    my $own = defined &main::OMBackSync ? \&main::OMBackSync : undef;
    my @integrations = (@NAMES@);
    *main::OMBackSync = sub {
        my @failed;
        for my $call (($own ? ['OMBackSync.pl', $own] : ()),
                      map { ["integration $_->[0]", \&{"OMBridge::Integration::$_->[1]::OMBackSync"}] } @integrations) {
            next if eval { $call->[1]->(@_); 1 };
            my $error = $@;
            $error = 'called exit(' . ($error->{code} || 0) . ')' if ref $error && ref($error) eq 'OMBridge::Exit';
            $error = "$error";
            $error =~ s/\s+\z//;
            push @failed, "$call->[0]: $error";
        }
        die join('; ', @failed) . "\n" if @failed;
        return 1;
    };
}
"""


class Integration(NamedTuple):
    """One merged integration: its name, where it came from, and its code."""

    name: str
    info: str
    code: str


def package_of(name: str) -> str:
    """The perl package an integration's code lives in."""
    return "OMBridge::Integration::" + name.replace("-", "_")


def check_name(name: str) -> str:
    """Refuse a name that cannot be a marker and a package."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad integration name {name!r}: letters, digits, - and _, starting with a letter")
    return name


def split(text: str) -> tuple[str, list[Integration], str]:
    """(hand-written part before the region, the integrations, the part after: __END__ and data)."""
    start = text.find(BEGIN + "\n")
    if start < 0:
        data = _DATA.search(text)
        cut = data.start() if data else len(text)
        return text[:cut], [], text[cut:]
    stop = text.find(END + "\n", start)
    if stop < 0:
        raise BridgeError(f"the managed region of the script has no end marker ({END!r}): fix the file by hand")
    region = text[start + len(BEGIN) + 1:stop]
    found = [Integration(m["name"], m["info"], _unwrap(m["body"], m["name"])) for m in _BLOCK.finditer(region)]
    return text[:start], found, text[stop + len(END) + 1:]


def _wrap(integration: Integration) -> str:
    body = integration.code if integration.code.endswith("\n") else integration.code + "\n"
    return (f"# --- integration {integration.name} ({integration.info})\n"
            f"{{ package {package_of(integration.name)};\n#line 1 \"integration {integration.name}\"\n"
            f"{body}}}\n# --- end of integration {integration.name}\n")


def _unwrap(body: str, name: str) -> str:
    head = f"{{ package {package_of(name)};\n#line 1 \"integration {name}\"\n"
    if not body.startswith(head) or not body.endswith("}\n"):
        raise BridgeError(f"the block of integration {name} was edited by hand: fix the file or remove the block")
    return body[len(head):-2]


def join(head: str, integrations: list[Integration], tail: str) -> str:
    """The script with ``integrations`` in its managed region (no region when there are none)."""
    if not integrations:
        return head + tail
    if head and not head.endswith("\n"):
        head += "\n"
    names = ", ".join(f"['{i.name}', '{package_of(i.name)[len('OMBridge::Integration::'):]}']" for i in integrations)
    region = "".join(_wrap(i) for i in integrations) + DISPATCHER.replace("@NAMES@", names)
    return f"{head}{BEGIN}\n{region}{END}\n{tail}"


def list_integrations(home: Home) -> list[Integration]:
    """The integrations merged into the home's script."""
    if not home.script.exists():
        return []
    return split(home.script.read_text(encoding="utf-8", errors="surrogateescape"))[1]


def add(home: Home, name: str, source: Path) -> bool:
    """Merge the standalone ``OMBackSync.pl`` at ``source`` as integration ``name`` (replacing an
    integration of that name); returns True when it replaced one."""
    check_name(name)
    try:
        code = source.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
    if not _DEFINES.search(code):
        raise UsageError(f"{source} does not define sub OMBackSync")
    if _DATA.search(code):
        raise UsageError(f"{source} has an __END__ or __DATA__ section, which cannot be merged")
    if BEGIN in code or END in code or "# --- end of integration" in code:
        raise UsageError(f"{source} contains ombridge's own markers")
    text = _current(home)
    head, integrations, tail = split(text)
    package = package_of(name)
    if any(package_of(i.name) == package and i.name != name for i in integrations):
        raise UsageError(f"integration name {name} clashes with an existing one (same perl package {package})")
    replaced = any(i.name == name for i in integrations)
    entry = Integration(name, f"from {source.resolve()}, {time.strftime('%Y-%m-%d %H:%M:%S')}", code)
    integrations = [entry if i.name == name else i for i in integrations] if replaced else [*integrations, entry]
    _write(home, text, join(head, integrations, tail))
    return replaced


def remove(home: Home, name: str) -> None:
    """Take integration ``name`` out of the script."""
    text = _current(home)
    head, integrations, tail = split(text)
    if not any(i.name == name for i in integrations):
        raise NotFound(f"no integration {name} in {home.script}")
    _write(home, text, join(head, [i for i in integrations if i.name != name], tail))


def _current(home: Home) -> str:
    try:
        return home.script.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return ""


def _write(home: Home, old: str, new: str) -> None:
    """Check ``new`` with perl -c beside the script, then swap it in atomically."""
    script = home.script
    script.parent.mkdir(parents=True, exist_ok=True)
    exists = script.exists()
    st = script.stat() if exists else None
    fd, tmp_name = tempfile.mkstemp(prefix=".OMBackSync.", suffix=".pl", dir=script.parent)  # 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        try:
            check_syntax(tmp, home)
        except ScriptSyntaxError as exc:  # refused: the script is left as it was
            raise ScriptSyntaxError(str(script), exc.message.replace(str(tmp), str(script))) from None
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
            shutil.copy2(script, script.with_name(script.name + ".bak"))
        os.replace(tmp, script)
    finally:
        tmp.unlink(missing_ok=True)
