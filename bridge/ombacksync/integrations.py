"""Integrations that share the one ``OMBackSync.pl``, merged in and removed again by name.

The connector allows one ``OMBackSync.pl``: every integration merges its code into it and removes
it when uninstalled. ombridge keeps them in one managed region at the end of the script (before
``__END__``/``__DATA__`` if there is one), below whatever was written by hand:

    # >>> ombridge integrations: managed by `ombridge integration`; edit outside these markers
    # --- integration vendor-a (from /path/vendor-a.pl, 2026-11-22 10:00:00)
    { package OMBridge::Integration::vendor_a;
    ...the integration's OMBackSync.pl, unchanged (up to its __END__)...
    }
    # --- end of integration vendor-a
    # --- dispatcher
    ...
    # <<< ombridge integrations

Each integration lives in a package of its own, so its ``sub OMBackSync``, helpers, lexicals and
``our`` globals do not clash. What the integration calls package ``main`` is that package: a
``package main;`` statement in it (a script that defines its own exception classes, then returns to
``main``) is written as ``package OMBridge::Integration::<name>;``. The dispatcher checks at
compile time (so ``perl -c`` refuses the merge) that every integration's ``OMBackSync`` is where
it calls it. No ``#line`` directive is written: ``__FILE__``,
``dirname(__FILE__)``, ``$0`` and line numbers are those of the merged file, so an integration
finds the files installed beside the script. A POD section left open (before the region, or at
the end of an integration) is closed by :data:`POD_CLOSER`, a line that belongs to the region.
The region is parsed line by line between its markers, so any hand-written text around it is
given back byte for byte.

The dispatcher, run when the file is loaded, keeps the hand-written ``OMBackSync`` (if any) and
installs a ``main::OMBackSync`` that calls it and then every integration's, each in ``eval``: one
that dies does not keep the others from being called, and the error names the ones that failed.
For a Close that failed in some part, it remembers (under ``datafiles/integrations/``) which
parts succeeded, so a retry calls only the parts that failed (docs/protocol.md). A result that
would not pass ``perl -c`` is never written; writes are atomic, keep the file's mode and owner,
and keep the previous version as ``OMBackSync.pl.bak``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import BridgeError, NotFound, ScriptSyntaxError, UsageError
from ..home import Home
from .perlenv import check_syntax, load_settings

BEGIN = "# >>> ombridge integrations: managed by `ombridge integration`; edit outside these markers"
END = "# <<< ombridge integrations"
# Closes a POD section left open just above (perl would read our code as documentation). perl
# reads any line that starts with "=cut" as the end of POD; the words after it make it ours.
POD_CLOSER = "=cut (ombridge: ends the documentation above, so that the code below is read)"
_HEAD = re.compile(r"# --- integration (?P<name>\S+) \((?P<info>[^\n]*)\)\Z")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_DEFINES = re.compile(r"^\s*sub\s+OMBackSync\b", re.M)
_USES_DATA = re.compile(r"\bDATA\b")
# `package main;` (or `package main { ... }`) as a statement of its own line: a script that
# defines its exception classes first returns to main this way, and main is its own package.
_PACKAGE_MAIN = re.compile(r"^(\s*package\s+)main(?=\s*[;{])", re.M)
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")

DISPATCHER = r"""# --- dispatcher: OMBackSync calls the script's own OMBackSync (if any), then each integration's
{
    no warnings 'redefine';
    no strict 'refs';
    BEGIN {    # never a merge that cannot start: perl -c refuses it before it is written
        for (@NAMES@) {
            die "integration $_->[0] does not define OMBackSync in its own package once merged (it is in"
                . " another package: give it a `package main;` before its `sub OMBackSync`)\n"
                unless defined &{"OMBridge::Integration::$_->[1]::OMBackSync"};
        }
    }
    my $own = defined &main::OMBackSync ? \&main::OMBackSync : undef;
    my @parts = (($own ? ['OMBackSync.pl', $own] : ()),
                 map { ["integration $_->[0]", \&{"OMBridge::Integration::$_->[1]::OMBackSync"}] } (@NAMES@));
    # Which parts already closed an ID whose Close failed in another part: a retry calls only
    # the parts that failed (docs/protocol.md, "Integrations").
    my $records = defined $ENV{OvDataDir} && length $ENV{OvDataDir}
        ? "$ENV{OvDataDir}/datafiles/integrations" : undef;
    my $record_of = sub {
        my $hex = unpack('H*', $_[0]);
        return "$records/" . (length $hex > 200
            ? substr($hex, 0, 160) . '-' . unpack('%32C*', $_[0]) . '-' . length($_[0]) : $hex);
    };
    *main::OMBackSync = sub {
        my ($operation, $id) = @_;
        my $record = $records && defined $operation && $operation eq 'Close' && defined $id && length $id
            ? $record_of->($id) : undef;
        my %done;
        if ($record && open(my $in, '<', $record)) {
            my ($who, @names) = <$in>;
            chomp($who, @names);
            my $age = time - (stat $in)[9];
            %done = map { $_ => 1 } @names if defined $who && $who eq unpack('H*', $id) && $age < 7 * 86400;
        }
        my @failed;
        for my $part (@parts) {
            next if $done{$part->[0]};
            if (eval { $part->[1]->(@_); 1 }) {
                $done{$part->[0]} = 1;
                next;
            }
            my $error = $@;
            if (ref $error && ref($error) eq 'OMBridge::Exit') {
                $error = 'called exit(' . ($error->{code} || 0) . ')';
            } elsif (ref $error && "$error" =~ /\A(?:[\w:]+=)?[A-Z]+\(0x[0-9a-f]+\)\z/) {
                # A reference without a text of its own: the readable one-line dump a script's
                # own die of it gets (docs/protocol.md, "Faults"); Data::Dumper only now.
                local ($@, $!, $SIG{__DIE__}, $SIG{__WARN__});
                my $dump = eval {
                    require Data::Dumper;
                    Data::Dumper->new([$error])->Indent(0)->Terse(1)->Sortkeys(1)->Useqq(1)->Dump;
                };
                $error = $dump if defined $dump;
            }
            $error = "$error";
            $error =~ s/\s+\z//;
            push @failed, "$part->[0]: $error";
        }
        if ($record && @failed) {
            mkdir "$ENV{OvDataDir}/datafiles", 0700;
            mkdir $records, 0700;
            if (open(my $out, '>', "$record.$$")) {
                print {$out} join("\n", unpack('H*', $id), grep { $done{$_} } map { $_->[0] } @parts), "\n";
                close $out and rename "$record.$$", $record;
            }
        } elsif ($record) {
            unlink $record;
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


def _lines(text: str) -> list[str]:
    # Lines as perl sees them: split at "\n" only (str.splitlines would also split at form
    # feeds and other separators that perl reads as ordinary characters).
    return _LINE.findall(text)


def _scan(lines: list[str]) -> tuple[int, bool]:
    """(index of the first ``__END__``/``__DATA__`` line outside POD, or len(lines); whether the
    text before it ends inside POD). Heredocs are not parsed: a heredoc line that looks like
    ``=head1`` or ``__END__`` would mislead this scan (and perl's own POD rules are the same)."""
    in_pod = False
    for n, line in enumerate(lines):
        bare = line.rstrip("\r\n")
        if in_pod:
            in_pod = not bare.startswith("=cut")
        elif re.match(r"=[A-Za-z]", bare):
            in_pod = True  # any "=word" line starts POD where perl expects a statement, "=cut" too
        elif re.fullmatch(r"__(?:END|DATA)__[ \t]*\r?", bare):
            return n, in_pod
    return len(lines), in_pod


def split(text: str) -> tuple[str, list[Integration], str]:
    """(hand-written part before the region, the integrations, the part after: __END__ and data)."""
    lines = _lines(text)
    try:
        start = lines.index(BEGIN + "\n")
    except ValueError:
        cut, _ = _scan(lines)
        return "".join(lines[:cut]), [], "".join(lines[cut:])
    try:
        stop = lines.index(END + "\n", start)
    except ValueError:
        raise BridgeError(f"the managed region of the script has no end marker ({END!r}): fix the file by hand") from None
    region = lines[start + 1:stop]
    if region and region[0] == POD_CLOSER + "\n":
        region = region[1:]
    found: list[Integration] = []
    n = 0
    while n < len(region):
        head = _HEAD.match(region[n].rstrip("\n"))
        if not head:
            n += 1  # the dispatcher: rebuilt from the list at every change
            continue
        name = head["name"]
        try:
            last = region.index(f"# --- end of integration {name}\n", n + 1)
        except ValueError:
            raise BridgeError(f"the block of integration {name} has no end marker: fix the file or remove the block") from None
        found.append(Integration(name, head["info"], _unwrap(region[n + 1:last], name)))
        n = last + 1
    return "".join(lines[:start]), found, "".join(lines[stop + 1:])


def _wrap(integration: Integration) -> str:
    body = integration.code if integration.code.endswith("\n") or not integration.code else integration.code + "\n"
    # No #line directive: __FILE__, dirname(__FILE__), $0 and line numbers stay those of the
    # merged OMBackSync.pl, so files beside it are found and messages point at real lines.
    closer = POD_CLOSER + "\n" if _scan(_lines(body))[1] else ""
    return (f"# --- integration {integration.name} ({integration.info})\n"
            f"{{ package {package_of(integration.name)};\n{body}{closer}}}\n"
            f"# --- end of integration {integration.name}\n")


def _unwrap(block: list[str], name: str) -> str:
    heads = (f"{{ package {package_of(name)};\n",)
    legacy = f"#line 1 \"integration {name}\"\n"  # written by ombridge before 0.x: read, never written
    if not block or block[0] not in heads or block[-1] != "}\n":
        raise BridgeError(f"the block of integration {name} was edited by hand: fix the file or remove the block")
    body = block[1:-1]
    if body and body[0] == legacy:
        body = body[1:]
    if body and body[-1] == POD_CLOSER + "\n":
        body = body[:-1]
    return "".join(body)


def join(head: str, integrations: list[Integration], tail: str) -> str:
    """The script with ``integrations`` in its managed region (no region when there are none)."""
    if not integrations:
        return head + tail
    if head and not head.endswith("\n"):
        head += "\n"
    names = ", ".join(f"['{i.name}', '{package_of(i.name)[len('OMBridge::Integration::'):]}']" for i in integrations)
    closer = POD_CLOSER + "\n" if _scan(_lines(head))[1] else ""
    region = "".join(_wrap(i) for i in integrations) + DISPATCHER.replace("@NAMES@", names)
    return f"{head}{BEGIN}\n{closer}{region}{END}\n{tail}"


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
    if BEGIN in code or END in code or "# --- end of integration" in code or POD_CLOSER in code:
        raise UsageError(f"{source} contains ombridge's own markers")
    lines = _lines(code)
    cut, _ = _scan(lines)
    code, after = "".join(lines[:cut]), "".join(lines[cut + 1:])
    if not _DEFINES.search(code):
        raise UsageError(f"{source} does not define sub OMBackSync")
    # Merged, the integration's main is its own package: its `package main;` returns there.
    code = _PACKAGE_MAIN.sub(lambda m: m[1] + package_of(name), code)
    if after.strip() and _USES_DATA.search(code):
        # Only the main script's __DATA__ is readable: merged, it would read another section.
        raise UsageError(f"{source} reads its own __DATA__ section, which cannot be merged")
    text = _current(home)
    head, integrations, tail = split(text)
    package = package_of(name)
    if any(package_of(i.name) == package and i.name != name for i in integrations):
        raise UsageError(f"integration name {name} clashes with an existing one (same perl package {package})")
    replaced = any(i.name == name for i in integrations)
    entry = Integration(name, f"from {source.resolve()}, {time.strftime('%Y-%m-%d %H:%M:%S')}", code)
    integrations = [entry if i.name == name else i for i in integrations] if replaced else [*integrations, entry]
    merged = join(head, integrations, tail)
    try:
        _write(home, text, merged)
    except ScriptSyntaxError as exc:
        raise _not_merged(exc, name, source, home.script, merged, code) from None
    return replaced


def _not_merged(exc: ScriptSyntaxError, name: str, source: Path, script: Path, merged: str,
                code: str) -> ScriptSyntaxError:
    """perl's refusal of a merge, told of the integration: its name, its file and its own lines
    (perl named the merged file's), and that the home's script was left as it was."""
    first = merged[:merged.index(f"# --- integration {name} (")].count("\n") + 3  # (after the header lines)
    last = first + code.count("\n")

    def own_line(m: re.Match[str]) -> str:
        n = int(m[1])
        return f"{source} line {n - first + 1}" if first <= n <= last else m[0]

    message = re.sub(rf"{re.escape(str(script))} line (\d+)", own_line, exc.message).rstrip("\n")
    return ScriptSyntaxError(f"integration {name} ({source})", f"{message}\nnothing was merged: {script} is unchanged")


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
            check_syntax(tmp, home, load_settings(home))
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
