"""A stand-in for OMi's gateway: a real HTTP server on 127.0.0.1 that implements the sync-back
path (``/opr-gateway/rest/9.10/synchronization/``), checks HTTP Basic credentials and records
every request it got. Its answer can be set (``status``); it can be started late (``down``);
``before_answer`` (a callable given each request) runs before it answers, e.g. to forward OMi's
echo of a close to the listener while ombridge still waits for the gateway."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GW_USER = "ombridge-connector"
GW_PASSWORD = "Gw-In-Pa55word-of-the-connected-server"
SYNC = "/opr-gateway/rest/9.10/synchronization/"


class Gateway:
    """``url``, ``requests`` (method, path, authorised, body, content type), ``status`` to answer."""

    def __init__(self, port: int = 0, password: str = GW_PASSWORD) -> None:
        self.port = port or free_port()
        self.password = password
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.before_answer: Callable[[dict[str, Any]], None] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> Gateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                expected = "Basic " + base64.b64encode(f"{GW_USER}:{gateway.password}".encode()).decode()
                authorised = self.headers.get("Authorization") == expected
                request = {"method": self.command, "path": self.path, "authorised": authorised, "body": body,
                           "type": self.headers.get("Content-Type")}
                with gateway._lock:
                    gateway.requests.append(request)
                if gateway.before_answer is not None:
                    gateway.before_answer(request)
                status = gateway.status if authorised else 401
                if not self.path.startswith(SYNC):
                    status = 404
                answer = b"" if status < 300 else f"gateway says {status}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml" if status < 300 else "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_POST = do_HEAD = do_GET = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(root: Path, gateway_url: str, external_id: str | None = None, user: str = GW_USER) -> None:
    """Write conf/ombridge.conf's [omi] section (and nothing else)."""
    lines = ["[omi]", f'gateway = "{gateway_url}"', f'user = "{user}"']
    if external_id is not None:
        lines.append(f"external_id = {external_id}")
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "ombridge.conf").write_text("\n".join(lines) + "\n")
