"""Helpers of the HTTP listener tests: the CLI, a listening supervisor, users, certificates, bodies."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import httpx
from conftest import FIXTURES
from conftest import run_ombridge as omb  # noqa: F401 - the web tests take it from here

from bridge.home import Home

USER = "omi"
PASSWORD = "Sup3r-Secret-Pa55word-ombridge"  # distinctive: searched for in files, logs and ps
NS = "http://www.hp.com/2009/software/opr/data_model"


def install(home: Home, fixture: str) -> None:
    """Use tests/fixtures/FIXTURE.pl as the home's script."""
    shutil.copy(FIXTURES / f"{fixture}.pl", home.script)
    os.chmod(home.script, 0o600)


def recorded(home: Home) -> list[str]:
    """The IDs the recorder fixtures received, decoded from hex (exact bytes)."""
    path = home.tmp / "ids.hex"
    if not path.exists():
        return []
    return [bytes.fromhex(line.split()[0]).decode("utf-8") for line in path.read_text().splitlines() if line]


def change_body(state_change: str | None = "closed", **props: str) -> bytes:
    """An ``<event_change>`` body: a state change (``state_change`` form) and string property changes."""
    parts = []
    if state_change is not None:
        parts.append(f"<state_change><property_name>state</property_name>"
                     f"<current_value xsi:type=\"xs:string\">{state_change}</current_value></state_change>")
    for name, value in props.items():
        parts.append(f"<string_property_change><property_name>{name}</property_name>"
                     f"<current_value xsi:type=\"xs:string\">{value}</current_value></string_property_change>")
    return (f'<event_change xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xmlns:xs="http://www.w3.org/2001/XMLSchema"><event_ref><target_id>ignored</target_id></event_ref>'
            f"<changed_properties>{''.join(parts)}</changed_properties></event_change>").encode()


def change_path(event_id: str) -> str:
    """``/omi/event_change/<id>`` with every byte of the id that needs it percent-encoded."""
    return "/omi/event_change/" + quote(event_id, safe="")


XML = {"Content-Type": "application/xml"}


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ombridge test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class Listening:
    """A started supervisor with its listener: ``url``, ``client()`` and the status it started with."""

    def __init__(self, home: Home, st: dict, verify: object = False) -> None:
        self.home, self.status = home, st
        web = st["listener"]
        self.url = web["url"]
        self.port = web["port"]
        self.pid = st["supervisor"]["pid"]
        self.verify = verify

    def client(self, auth: tuple[str, str] | None = (USER, PASSWORD), **kw: object) -> httpx.Client:
        """An HTTP client (keep-alive) of the listener."""
        return httpx.Client(base_url=self.url, auth=auth, verify=self.verify, timeout=60, **kw)


def event_count(home: Home) -> int:
    """Events stored in the home's event core."""
    from bridge import store

    conn = store.connect(home)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
