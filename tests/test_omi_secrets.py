"""Secrets are never repeated: not a password typed on the command line by mistake, not a
gateway URL holding credentials; and a gateway in plain HTTP is accepted with a warning that the
password then crosses the network in clear. Driven through the CLI, as an operator types it."""

from __future__ import annotations

import json
from pathlib import Path

from omi_gateway import GW_PASSWORD, Gateway, configure
from web_support import omb

from bridge.home import Home

SECRET = "Typed-0n-The-Command-Line-Pa55"


def _everything_written(home: Home) -> str:
    """The home's logs and whatever else the commands wrote under it (the config file aside)."""
    found = []
    for path in Path(home.root).rglob("*"):
        if path.is_file() and path.name != "ombridge.conf" and path.suffix not in (".db", ".db-wal", ".db-shm"):
            found.append(path.read_text(errors="replace"))
    return "\n".join(found)


def test_a_password_given_on_the_command_line_is_refused_without_repeating_it(home: Home) -> None:
    for args in (["omi", "password", SECRET], ["omi", "password", f"--password={SECRET}"],
                 ["omi", "password", "-p", SECRET], ["user", "add", "omi", SECRET],
                 ["user", "add", f"--password={SECRET}", "omi"], ["user", "passwd", "omi", SECRET]):
        r = omb(home, *args, check=False, stdin=f"{SECRET}\n{SECRET}\n")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert SECRET not in r.stdout + r.stderr, args
        assert "no further word on the command line" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (home.root / "conf" / "omi-password").exists()
    assert json.loads(omb(home, "user", "list", "--json").stdout) == []
    assert SECRET not in _everything_written(home)


def test_a_gateway_url_holding_a_password_is_refused_without_repeating_it(home: Home) -> None:
    for gateway in (f"https://ombridge-connector:{SECRET}@omi.example.com", f"https://:{SECRET}@omi.example.com/x"):
        configure(home.root, gateway)
        for args, said in ((["omi", "test"], "error"), (["start", "--listen", "127.0.0.1:0"], "error"),
                           (["check"], "warning")):  # (check: the script is good, the warning beside it)
            r = omb(home, *args, check=False)
            assert SECRET not in r.stdout + r.stderr, (args, r.stdout, r.stderr)
            assert f"{said}: " in r.stderr and "omi.gateway must not hold credentials" in r.stderr, (args, r.stderr)
            assert (r.returncode == 0) is (said == "warning"), (args, r.returncode)
        assert SECRET not in _everything_written(home)
    configure(home.root, "https://[not-an-address")  # a URL that does not parse: one sentence, no traceback
    r = omb(home, "omi", "test", check=False)
    assert r.returncode == 2 and "omi.gateway must be https://HOST[:PORT]" in r.stderr and "Traceback" not in r.stderr


def test_a_plain_http_gateway_works_with_a_warning(home: Home, tmp_path: Path) -> None:
    gateway = Gateway().start()
    try:
        configure(home.root, gateway.url)
        omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
        r = omb(home, "omi", "test")
        assert r.stdout.count("\n") == 1 and "HTTP 200" in r.stdout
        assert "plain HTTP" in r.stderr and "crosses the network in clear" in r.stderr, r.stderr
        r = omb(home, "check")  # still a good script: exit 0, the warning beside it
        assert "syntax OK" in r.stdout + r.stderr and "plain HTTP" in r.stderr
        configure(home.root, gateway.url.replace("http://", "https://"))
        r = omb(home, "check")
        assert "plain HTTP" not in r.stderr
    finally:
        gateway.stop()
