"""The listener's TLS: Mozilla's "intermediate" configuration, and a clear word on a bad file.

TLS 1.2 and 1.3 only; under TLS 1.2 only the AEAD suites of Mozilla's intermediate profile
(ECDHE/DHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3's suites are all AEAD). OpenSSL's own
message for a file it cannot use (``[SSL] PEM lib (_ssl.c:3905)``) names neither the file nor the
fault, so each file is looked at first and the fault said in one sentence.
"""

from __future__ import annotations

import ssl

from ..errors import BridgeError

# https://ssl-config.mozilla.org/ "intermediate" (version 5.7), TLS 1.2 suites
INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")


class TlsFileError(BridgeError):
    """A TLS certificate or key that cannot be used; the message names the file and the fault."""


def _read(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("ascii", "replace")
    except OSError as exc:
        raise TlsFileError(f"the TLS {what} {path} cannot be read: {exc.strerror or exc}") from exc


def check_files(cert: str, key: str) -> None:
    """Raise :class:`TlsFileError` saying which file is wrong and why (not PEM, unreadable,
    encrypted, a key that does not match the certificate)."""
    cert_text, key_text = _read(cert, "certificate"), _read(key, "key")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TlsFileError(f"the TLS certificate {cert} is not a PEM certificate (no BEGIN CERTIFICATE block)")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsFileError(f"the TLS key {key} is not a PEM private key (no BEGIN ... PRIVATE KEY block)")
    if "ENCRYPTED" in key_text:
        raise TlsFileError(f"the TLS key {key} is encrypted: ombridge needs it without a passphrase (chmod 600 instead)")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise TlsFileError(f"the TLS certificate {cert} is damaged: its PEM block does not decode ({exc.reason})") from exc
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "MISMATCH" in str(exc).upper():
            raise TlsFileError(f"the TLS key {key} does not match the certificate {cert}") from exc
        raise TlsFileError(f"the TLS key {key} is damaged or not a key for {cert}: {exc.reason or exc}") from exc


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The listener's context: TLS 1.2+, AEAD suites only, the certificate and key loaded."""
    check_files(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert, key)
    return context
