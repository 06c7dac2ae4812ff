"""The HTTP client of the sync back: one keep-alive connection per lane thread to OMi's gateway.

``http.client`` rather than ``urllib``: urllib opens a connection (and a TLS handshake) per
request, which costs more than the request itself. A kept connection that the gateway closed
meanwhile is noticed on the next request and that request is sent once more on a new one (an
``event_change`` is idempotent: the same change applied twice leaves the event as once).
Redirects are not followed. The ``Authorization`` header is never logged nor put in an answer.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from ..model import OUTPUT_TAIL

MAX_ANSWER = 1 << 20  # bytes of an answer read (so that the connection can be kept)
_local = threading.local()


class Answer:
    """What the gateway answered (``status`` None: it could not be reached)."""

    __slots__ = ("status", "reason", "text", "error")

    def __init__(self, status: int | None, reason: str = "", text: str = "", error: str | None = None) -> None:
        self.status, self.reason, self.text, self.error = status, reason, text, error

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300

    def summary(self) -> str:
        """One line: the status, or why there is none."""
        if self.status is None:
            return self.error or "no answer"
        return f"HTTP {self.status} {self.reason}".rstrip()


def _connection(config: Any, url: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    """(a connection to ``url``'s server, whether it was kept from an earlier request)."""
    parts = urlsplit(url)
    target = (parts.scheme, parts.hostname, parts.port, config.ca_file)
    kept = getattr(_local, "kept", None)
    if kept is not None and kept[0] == target:
        kept[1].timeout = timeout
        if kept[1].sock is not None:
            kept[1].sock.settimeout(timeout)
        return kept[1], True
    if kept is not None:
        kept[1].close()
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=config.ca_file)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    _local.kept = (target, conn)
    return conn, False


def _drop() -> None:
    kept = getattr(_local, "kept", None)
    if kept is not None:
        kept[1].close()
        _local.kept = None


def request(config: Any, method: str, url: str, body: bytes | None, auth: str, timeout: float) -> Answer:
    """One request to the gateway; never raises for a network fault (it is the answer's error)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Authorization": auth, "User-Agent": "ombridge", "Accept": "application/xml"}
    if body is not None:
        headers["Content-Type"] = "application/xml; charset=utf-8"
    for _ in range(2):
        conn, kept = _connection(config, url, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_ANSWER) if method != "HEAD" else b""
            if response.will_close or len(data) >= MAX_ANSWER:
                _drop()
            return _judge(response.status, response.reason, data.decode("utf-8", "replace")[:OUTPUT_TAIL])
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            _drop()
            if not kept:
                return Answer(None, error=f"OMi's gateway closed the connection: {exc}")
        except ssl.SSLCertVerificationError as exc:
            _drop()
            return Answer(None, error=f"OMi's gateway's certificate is not trusted ({exc.verify_message}): "
                                      f"set [omi] ca_file to the CA that signed it")
        except TimeoutError:
            _drop()
            return Answer(None, error=f"OMi's gateway did not answer within {timeout:g} s")
        except (OSError, http.client.HTTPException) as exc:
            _drop()
            return Answer(None, error=f"OMi's gateway cannot be reached: {getattr(exc, 'strerror', None) or exc}")
    return Answer(None, error="OMi's gateway closed the connection twice")


def _judge(status: int, reason: str, text: str) -> Answer:
    if 200 <= status < 300:
        return Answer(status, reason, text)
    hint = {401: ": check [omi] user and `ombridge omi password` (the connected server's incoming password)",
            403: ": the connected server may not change this event",
            404: ": OMi does not know this event (or the gateway URL is wrong)"}.get(status, "")
    return Answer(status, reason, text, f"OMi's gateway answered HTTP {status} {reason}{hint}: {text.strip()[:300]}")


def post(config: Any, url: str, body: bytes, auth: str, timeout: float) -> Answer:
    """POST an XML body to ``url``."""
    return request(config, "POST", url, body, auth, timeout)


def head(config: Any, url: str, auth: str, timeout: float) -> Answer:
    """HEAD ``url`` (the gateway's ping)."""
    return request(config, "HEAD", url, None, auth, timeout)
