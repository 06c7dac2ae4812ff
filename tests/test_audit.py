"""The audit trail of the command line (issue 32, item 5): one line of ``ombridge.audit`` per state
change, in the home's log/ombridge.log with no supervisor running, naming the local user, and never
a secret (the console's and the control socket's lines: tests/test_pause_console.py, test_pause.py)."""

from __future__ import annotations

import getpass
import socket

from conftest import run_ombridge as omb

from bridge.home import Home

SECRET = "Bearer s3cr3t-t0ken-in-a-header"
PASSWORD = "An0ther-Sup3r-Secret-pa55"


def audit_lines(home: Home) -> list[str]:
    return [line.split("ombridge.audit: ", 1)[1] for line in (home.log_dir / "ombridge.log").read_text().splitlines()
            if "ombridge.audit: " in line]


def test_every_change_of_the_command_line_is_one_line_naming_the_local_user_and_no_secret(home: Home) -> None:
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--url", "https://itsm.example/api").stdout.strip()
    omb(home, "subscriber", "set", sid, "--timeout", "5", "--secret-header", "Authorization", stdin=SECRET + "\n")
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    omb(home, "subscriber", "disable", sid)
    omb(home, "subscriber", "enable", sid)
    omb(home, "subscriber", "pause", sid)
    omb(home, "subscriber", "pause", sid)  # nothing changed: no line
    omb(home, "retry", "--subscriber", sid)
    omb(home, "subscriber", "purge", sid)
    omb(home, "user", "add", "alice", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    omb(home, "user", "remove", "alice")
    omb(home, "omi", "password", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert omb(home, "subscriber", "remove", "999", check=False).returncode != 0  # refused: no line
    omb(home, "subscriber", "remove", sid)

    me = f"local user {getpass.getuser()} on {socket.gethostname()} (command line): "
    lines = audit_lines(home)
    assert all(line.startswith(me) for line in lines), lines
    assert [line[len(me):] for line in lines] == [
        "topic task/change defined",
        f"subscriber {sid} added (web)",
        f"subscriber {sid} updated (timeout, secret header Authorization)",
        f"subscriber {sid} attached to task/change",
        f"subscriber {sid} disabled",
        f"subscriber {sid} enabled",
        f"subscriber {sid} (web) paused on every node: its deliveries are stored and wait until "
        f"`ombridge subscriber resume {sid}` (0 open deliveries now)",
        f"0 failed deliveries reopened (of subscriber {sid})",
        f"subscriber {sid}: 0 open deliveries purged",
        "user alice added",
        "user alice removed",
        "OMi password stored",
        f"subscriber {sid} removed",
    ]
    log = (home.log_dir / "ombridge.log").read_text()
    assert SECRET not in log and PASSWORD not in log
