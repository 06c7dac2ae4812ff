"""Helpers of the console tests: logging in with a plain HTTP client, reading a page's CSRF token."""

from __future__ import annotations

import html
import re

import httpx
from web_support import PASSWORD, USER, Listening

TOKEN = re.compile(r'name="(token|csrf)" value="([^"]*)"')


def form_token(page: str, name: str = "csrf") -> str:
    """The hidden ``name`` field of the first form of an HTML page."""
    for found, value in TOKEN.findall(page):
        if found == name:
            return html.unescape(value)
    raise AssertionError(f"no {name} field in the page")


def login(srv: Listening, user: str = USER, password: str = PASSWORD) -> httpx.Client:
    """A client holding a console session (no Basic credentials), as a browser would."""
    client = srv.client(auth=None, follow_redirects=False)
    page = client.get("/ui/login")
    assert page.status_code == 200
    r = client.post("/ui/login", data={"token": form_token(page.text, "token"), "user": user, "password": password,
                                       "next": "/ui/status"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/status"
    return client


def csrf_of(client: httpx.Client, path: str = "/ui/status") -> str:
    """The session's CSRF token, as the forms of ``path`` carry it."""
    return form_token(client.get(path).text)
