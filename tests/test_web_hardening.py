"""The listener probed as an attacker would: parallel guesses, a client that sends a whole large
body before reading, the TLS suites it accepts, files that are not what they claim; and the small
contracts around them (the ping's media type, HSTS, the listener's guarded states)."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time

import httpx
import pytest
from conftest import status
from web_support import PASSWORD, USER, make_cert, omb

from bridge.model import IllegalTransition, ListenerState


def test_parallel_wrong_guesses_are_not_checked_faster_than_sequential_ones(home, listening) -> None:
    srv = listening()
    good = srv.client()
    assert good.get("/omi").status_code == 200  # these credentials succeeded once from here
    codes: list[int] = []
    barrier = threading.Barrier(30)

    def guess(n: int) -> None:
        with httpx.Client(base_url=srv.url, auth=(USER, f"wrong-guess-{n}"), timeout=60) as http:
            barrier.wait()
            codes.append(http.get("/omi").status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    took = []
    try:  # while the address is throttled, the known credentials get in at once
        for _ in range(5):
            started = time.monotonic()
            assert good.get("/omi").status_code == 200
            took.append(time.monotonic() - started)
    finally:
        good.close()
    for t in threads:
        t.join()
    assert max(took) < 0.3, took
    assert sorted(set(codes)) == [401, 429] and len(codes) == 30
    assert codes.count(401) <= 4  # the allowance (3) and one reserved check: the rest refused unhashed
    web = status(home)["listener"]
    assert web["auth_failures"] == codes.count(401) and web["auth_throttled"] == codes.count(429)
    with httpx.Client(base_url=srv.url, auth=(USER, "another-guess"), timeout=60) as http:
        r = http.get("/omi")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def _raw_request(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head + body)  # everything first, as a simple client does
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_the_413_reaches_a_client_that_sends_its_whole_body_first(home, listening) -> None:
    srv = listening()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    body = b"<x>" + b"a" * (5 << 20) + b"</x>"
    for path in ("/omi/event_change/INC-1", "/api/v1/events"):
        kind = "application/json" if path.startswith("/api") else "application/xml"
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        answer = _raw_request(srv.port, head, body)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"the body is larger than 1048576 bytes" in answer
    chunked = (f"POST /omi/event HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
               "Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"a" * 65536
    chunks = (b"%x\r\n" % len(piece) + piece + b"\r\n") * 40 + b"0\r\n\r\n"
    assert _raw_request(srv.port, chunked, chunks).startswith(b"HTTP/1.1 413 ")


def test_the_ping_says_text_plain(home, listening) -> None:
    srv = listening()
    with srv.client() as http:
        r = http.get("/omi")
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
        assert "strict-transport-security" not in r.headers  # plain HTTP: no HSTS


def _handshake(port: int, cafile: str, ciphers: str | None, version: ssl.TLSVersion) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.cipher()[0]
    except (ssl.SSLError, ConnectionResetError):
        return None


def test_tls_offers_only_aead_suites_and_sends_hsts(home, listening, tmp_path) -> None:
    cert, key = make_cert(tmp_path)
    srv = listening("--tls-cert", str(cert), "--tls-key", str(key), verify=ssl.create_default_context(cafile=str(cert)))
    v12 = ssl.TLSVersion.TLSv1_2
    for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"):
        assert _handshake(srv.port, str(cert), cbc, v12) is None, cbc
    assert _handshake(srv.port, str(cert), "ECDHE-ECDSA-AES128-GCM-SHA256", v12) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert _handshake(srv.port, str(cert), "ECDHE-ECDSA-CHACHA20-POLY1305", v12) == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert _handshake(srv.port, str(cert), None, ssl.TLSVersion.TLSv1_3) is not None
    with srv.client() as http:
        r = http.get("/omi")
        assert r.status_code == 200 and r.headers["strict-transport-security"] == "max-age=31536000"


def test_a_bad_tls_file_is_named_with_its_fault(home, tmp_path) -> None:
    cert, key = make_cert(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = make_cert(other)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    cases = [(cert, other_key, f"the TLS key {other_key} does not match the certificate {cert}"),
             (key, key, f"the TLS certificate {key} is not a PEM certificate"),
             (cert, cert, f"the TLS key {cert} is not a PEM private key"),
             (garbage, key, f"the TLS certificate {garbage} is damaged")]
    for c, k, said in cases:
        r = omb(home, "start", "--listen", "127.0.0.1:0", "--tls-cert", str(c), "--tls-key", str(k), check=False)
        assert r.returncode == 1 and said in r.stderr, r.stderr
        assert "PEM lib" not in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert status(home)["supervisor"]["state"] == "stopped"


def test_the_listener_state_changes_only_along_its_table(home) -> None:
    from bridge.web.config import ListenConfig
    from bridge.web.listener import Listener

    listener = Listener(home, ListenConfig("127.0.0.1", 0))
    with pytest.raises(IllegalTransition, match="cannot go from stopped to stopping"):
        listener._change_state(ListenerState.STOPPING)
    listener._change_state(ListenerState.LISTENING)
    listener._change_state(ListenerState.STOPPING)
    listener._change_state(ListenerState.STOPPED)
    assert listener.state is ListenerState.STOPPED
