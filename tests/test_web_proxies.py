"""X-Forwarded-For and X-Forwarded-Proto count only from the proxies named in
``[listen] trusted_proxies`` (none by default): otherwise any client, a local one included, would
choose the address the login throttle counts and whether the console's cookies are ``Secure``.
A real supervisor and listener on 127.0.0.1, a real HTTP client."""

from __future__ import annotations

import httpx
from conftest import status
from web_support import USER, omb

from bridge.home import Home


def _conf(home: Home, text: str) -> None:
    (home.root / "conf" / "ombridge.conf").write_text(text)


def _guesses(url: str, n: int) -> list[int]:
    """``n`` wrong passwords one after the other, each claiming to come from another address."""
    codes = []
    for i in range(n):
        with httpx.Client(base_url=url, auth=(USER, f"wrong-{i}"), timeout=60) as http:
            codes.append(http.get("/omi", headers={"X-Forwarded-For": f"10.0.0.{i + 1}"}).status_code)
    return codes


def _login_cookie(url: str) -> str:
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
        assert r.status_code == 200
        return r.headers["set-cookie"]


def test_forwarded_headers_do_not_count_by_default(home: Home, listening) -> None:
    srv = listening()
    codes = _guesses(srv.url, 6)
    assert codes[:3] == [401, 401, 401] and 429 in codes, codes  # throttled as one address: 127.0.0.1
    assert status(home)["listener"]["auth_throttled"] >= 1
    assert "secure" not in _login_cookie(srv.url).lower()  # plain HTTP stays plain, whatever it claims


def test_forwarded_headers_count_from_a_trusted_proxy(home: Home, listening) -> None:
    _conf(home, '[listen]\ntrusted_proxies = ["127.0.0.1", "10.9.0.0/16"]\n')
    srv = listening()
    assert status(home)["listener"]["trusted_proxies"] == ["127.0.0.1/32", "10.9.0.0/16"]
    assert _guesses(srv.url, 6) == [401] * 6  # six clients behind the proxy, one failure each
    assert "; secure" in _login_cookie(srv.url).lower()  # the proxy speaks HTTPS to the browser
    log = (home.root / "log" / "ombridge.log").read_text()
    assert "authentication failed from 10.0.0.6" in log


def test_a_bad_trusted_proxy_fails_the_start_with_one_sentence(home: Home) -> None:
    for value, said in (('["localhost"]', "'localhost' is not an IP address or network"),
                        ('["10.0.0.1/8"]', "'10.0.0.1/8' is not an IP address or network"),
                        ('"127.0.0.1"', "listen.trusted_proxies is a list of IP addresses or networks")):
        _conf(home, f"[listen]\ntrusted_proxies = {value}\n")
        r = omb(home, "start", "--listen", "127.0.0.1:0", check=False)
        assert r.returncode != 0 and said in r.stderr and r.stderr.count("\n") == 1, (value, r.stderr)
        assert "Traceback" not in r.stderr
    assert status(home)["supervisor"]["state"] == "stopped"
