"""docs/omi.md works as written: its recipes are run as a reader copies them, and its transcripts
are compared with what ombridge answers now."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from omi_gateway import SYNC, Gateway, configure
from web_support import omb

from bridge.home import Home

OMI_MD = Path(__file__).resolve().parent.parent / "docs" / "omi.md"


def recipe(holding: str) -> str:
    """The shell command of docs/omi.md whose first line (``$ ...``) holds ``holding``, with its
    continuation lines, without the prompt."""
    lines = OMI_MD.read_text().splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("$ ") and holding in line)
    command = [lines[first][2:]]
    while command[-1].endswith("\\"):
        first += 1
        command.append(lines[first])
    return "\n".join(command)


def test_the_gateway_netrc_recipe_keeps_a_password_with_spaces_and_quotes(home: Home, tmp_path: Path) -> None:
    password = 'four words, "quoted" and a back\\slash'
    gateway = Gateway(password=password).start()
    try:
        configure(home.root, gateway.url)
        omb(home, "omi", "password", stdin=f"{password}\n{password}\n")
        work = tmp_path / "reader"
        work.mkdir()
        subprocess.run(["bash", "-c", recipe("printf 'machine 127.0.0.1 ")], cwd=work, check=True,
                       env={**os.environ, "OMBRIDGE_HOME": str(home.root)})
        netrc = work / "gw-netrc"
        assert oct(netrc.stat().st_mode & 0o777) == "0o600"
        code = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--netrc-file", str(netrc),
                               "-I", gateway.url + SYNC], capture_output=True, text=True, check=True).stdout
        assert code == "200" and gateway.requests[-1]["authorised"]
    finally:
        gateway.stop()


def test_the_json_apis_nobody_listens_answer_is_as_shown(home: Home, listening) -> None:
    text = OMI_MD.read_text()
    command = re.search(r"^\$ curl -sS \$N -H 'Content-Type: application/json' -d '(\{\"topic\": \"ombacksync/error\".*?)' "
                        r"https://localhost:8443/api/v1/events\n(.*)$", text, re.M)
    assert command, "the transcript of a send nobody listens to"
    srv = listening()
    with srv.client() as http:
        r = http.post("/api/v1/events", content=command[1], headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and json.loads(command[2]) == r.json()
