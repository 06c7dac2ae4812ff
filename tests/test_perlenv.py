"""How perl is run: #! switches, @INC order, settings (--perl, conf/ombridge.conf, OvInstallDir),
and the CLI's edges that go with them (check with -T, close refusing only bad IDs, the layout)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import OMBRIDGE, wait_for
from conftest import run_ombridge as omb

from bridge.errors import UsageError
from bridge.home import Home
from bridge.ombacksync.perlenv import (
    HostSettings,
    check_command,
    host_command,
    load_settings,
    shebang_switches,
)


@pytest.mark.parametrize(("first_line", "switches"), [
    ("#!/usr/bin/perl -Tw", ["-T", "-w"]),
    ("#!/usr/bin/perl -w -T", ["-w", "-T"]),
    ("#!/usr/bin/perl -CSD", ["-CSD"]),
    ("#!/usr/bin/perl -CSDw", ["-CSD", "-w"]),
    ("#!/opt/OV/nonOV/perl/a/bin/perl -t", ["-t"]),
    ("#!/usr/bin/env perl -w", ["-w"]),
    ("#!/usr/bin/perl5.36 -W -X", ["-W", "-X"]),
    ("#!/usr/bin/perl -l -Mstrict -I/opt/lib", ["-l", "-Mstrict", "-I/opt/lib"]),
    ("#!/usr/bin/perl -wnp", ["-w"]),  # -n/-p would turn the host into a loop: ignored
    ("#!/usr/bin/perl -w -- -T", ["-w"]),
    ("#!/usr/bin/perl", []),
    ("#!/bin/sh -x", []),
    ("use strict;", []),
    ("# -T in a comment", []),
])
def test_shebang_switches(tmp_path: Path, first_line: str, switches: list[str]) -> None:
    script = tmp_path / "OMBackSync.pl"
    script.write_text(first_line + "\nsub OMBackSync { 1 }\n1;\n")
    assert shebang_switches(script) == switches
    assert host_command(script, HostSettings(), 5)[1:1 + len(switches)] == switches
    assert check_command(script, HostSettings())[1:1 + len(switches)] == switches


def test_check_honours_taint_on_the_shebang_line(home: Home) -> None:
    home.script.write_text("#!/usr/bin/perl -Tw\nuse strict;\nsub OMBackSync { 1 }\n1;\n")
    plain = subprocess.run(["perl", "-c", str(home.script)], capture_output=True, text=True)
    assert plain.returncode != 0 and '"-T" is on the #! line' in plain.stderr  # the trap
    assert "syntax OK" in omb(home, "check").stdout
    assert omb(home, "try", "T-1").stdout == "OK   T-1\n"


def test_the_script_folder_comes_after_perls_own_inc(home: Home) -> None:
    (home.script.parent / "Config.pm").write_text("package Config; die 'the team Config.pm was loaded';\n1;\n")
    (home.script.parent / "Helper.pm").write_text("package Helper; sub hi { 'hi' }\n1;\n")
    home.script.write_text("use Config; use Helper;\nsub OMBackSync { die 'no' unless Helper::hi() eq 'hi'; 1 }\n1;\n")
    assert "syntax OK" in omb(home, "check").stdout
    assert omb(home, "try", "I-1").stdout == "OK   I-1\n"


def test_settings_from_the_home_and_the_command_line(home: Home, tmp_path: Path) -> None:
    assert load_settings(home) == HostSettings()
    config = home.root / "conf" / "ombridge.conf"
    config.write_text('[ombacksync]\nperl = "/opt/OV/nonOV/perl/a/bin/perl"\ninit-timeout = 600\n'
                      'stop_grace = 2.5\nstart_backoff_cap = 60\nov_install_dir = "/opt/OV"\n')
    s = load_settings(home)
    assert (s.perl, s.init_timeout, s.stop_grace, s.start_backoff_cap, s.ov_install_dir) == (
        "/opt/OV/nonOV/perl/a/bin/perl", 600.0, 2.5, 60.0, "/opt/OV")
    assert load_settings(home, "/usr/bin/perl").perl == "/usr/bin/perl"  # --perl beats the file
    for bad, message in [("[ombacksync]\nperl = 3\n", "must be a path"), ("[ombacksync]\nnope = 1\n", "unknown setting"),
                         ("[ombacksync]\ninit_timeout = -1\n", "positive number"), ("[ombacksync\n", "is not valid TOML")]:
        config.write_text(bad)
        with pytest.raises(UsageError, match=message):
            load_settings(home)


def test_perl_and_ov_install_dir_reach_the_script(home: Home, tmp_path: Path) -> None:
    wrapper = tmp_path / "bundled-perl"  # stands for the connector's own perl
    wrapper.write_text(f"#!/bin/sh\necho wrapper >> {tmp_path}/used\nexec perl \"$@\"\n")
    wrapper.chmod(0o755)
    (home.root / "conf" / "ombridge.conf").write_text('[ombacksync]\nov_install_dir = "/opt/OV"\n')
    home.script.write_text("sub OMBackSync { open(my $f, '>>', \"$ENV{OvDataDir}/tmp/env\") or die; "
                           "print $f \"$ENV{OvInstallDir}\\n\"; 1 }\n1;\n")
    assert omb(home, "try", "--perl", str(wrapper), "E-1").stdout == "OK   E-1\n"
    assert (home.tmp / "env").read_text() == "/opt/OV\n/opt/OV\n"
    assert (tmp_path / "used").read_text().count("wrapper") == 2  # perl -c and the child
    r = omb(home, "try", "--perl", str(tmp_path / "nope"), "E-1", check=False)
    assert r.returncode != 0 and "perl not found" in r.stderr and "Traceback" not in r.stderr


def test_try_and_start_see_the_same_layout(home: Home, tmp_path: Path) -> None:
    # `try` in one home, `start` + a close + `stop` in a twin: the script sees the same folders
    # (its tmp/ and the log/ its output goes to) with the same modes, and writes the same output.
    twin = Home(tmp_path / "twin")
    shutil.copytree(home.root / "conf", twin.root / "conf")
    omb(home, "try", "L-1")
    omb(twin, "start")
    try:
        omb(twin, "close", "L-1")
        wait_for(lambda: twin.output.exists() and " Close L-1" in twin.output.read_text(), what="the twin's close")
    finally:
        omb(twin, "stop")

    def layout(h: Home) -> dict[str, str]:
        return {p.name: oct(p.stat().st_mode & 0o777) for p in h.root.iterdir() if p.name in ("conf", "log", "tmp")}

    assert layout(home) == layout(twin) and len(layout(home)) == 3
    assert layout(twin)["log"] == "0o700"
    assert [line.split(" ", 2)[2] for line in home.output.read_text().splitlines()] == ["Init", "Close L-1"]
    assert [line.split(" ", 2)[2] for line in twin.output.read_text().splitlines()] == ["Init", "Close L-1"]


def test_close_refuses_only_the_ids_that_cannot_be_stored(home: Home) -> None:
    r = subprocess.run([OMBRIDGE.encode(), b"--home", str(home.root).encode(), b"close", b"G-1", b"\xff\xfe", b"",
                        b"G-2"], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert len(r.stdout.splitlines()) == 2  # two event ids: G-1 and G-2 were sent
    err = r.stderr.decode()
    assert "not sent: ID '\\xff\\xfe': the ID is not valid UTF-8 text" in err
    assert "not sent: ID '': an ID must not be empty" in err and "Traceback" not in err
    sent = omb(home, "events", "list", "--json").stdout
    assert '"G-1"' in sent and '"G-2"' in sent
