"""The network side's parts on their own: OMi's XML codec, the listen settings, users and their
hashes, the authenticator and its failure throttle, the group committer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from xml.etree import ElementTree as ET

import pytest
from web_support import NS, change_body, omb

from bridge import store
from bridge.errors import NotFound, UsageError
from bridge.eventcore import events
from bridge.home import Home
from bridge.web import auth, config, omi, users
from bridge.web.committer import GroupCommitter

# -- OMi's XML ------------------------------------------------------------------------------------


def test_change_key_from_each_form_of_a_state_change() -> None:
    state_form = omi.change_key("E1", omi.parse(change_body("closed")))
    string_form = omi.change_key("E1", omi.parse(change_body(None, state="closed")))
    assert state_form == string_form == {"ID": "E1", "STATE": "closed", "CHANGED": "state"}


def test_change_key_of_other_changes() -> None:
    body = f"""<event_change xmlns="{NS}"><event_ref><target_id>OTHER</target_id></event_ref><changed_properties>
      <severity_property_change><property_name>severity</property_name><current_value>critical</current_value>
      </severity_property_change>
      <group_property_change><property_name>assigned_group_name</property_name>
        <current_group_name>Ops EU</current_group_name></group_property_change>
      <user_property_change><property_name>assigned_user</property_name><current_user_name>ana</current_user_name>
      </user_property_change>
      <annotation_property_change><property_name>annotation</property_name>
        <current_value>  checked the disk  </current_value><change_operation>insert</change_operation>
      </annotation_property_change>
      <string_property_change><property_name>id</property_name><current_value>X</current_value>
      </string_property_change>
    </changed_properties></event_change>""".encode()
    key = omi.change_key("E 2/ü", omi.parse(body))
    assert key == {"ID": "E 2/ü", "STATE": "", "SEVERITY": "critical", "ASSIGNED_GROUP_NAME": "Ops EU",
                   "ASSIGNED_USER": "ana", "ANNOTATION": "checked the disk", "OMI_ID": "X",
                   "CHANGED": "severity,assigned_group_name,assigned_user,annotation,id"}
    # an empty change (OMi's minimal one) is still an event/update, never a close
    assert omi.change_key("E3", omi.parse(f'<event_change xmlns="{NS}"/>'.encode())) == {
        "ID": "E3", "STATE": "", "CHANGED": ""}


def test_a_body_without_namespace_reads_the_same() -> None:
    body = change_body("closed").replace(f' xmlns="{NS}"'.encode(), b"")
    assert omi.change_key("E", omi.parse(body))["STATE"] == "closed"


@pytest.mark.parametrize("body, message", [
    (b'<!DOCTYPE x [<!ENTITY a "b">]><event_change>&a;</event_change>', "DOCTYPE declarations are refused"),
    (b'<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><event_change/>', "DOCTYPE declarations are refused"),
    (b"<event_change>", "malformed XML"),
    (b"", "malformed XML"),
    (b'<?xml version="1.0" encoding="klingon"?><x/>', "XML"),
])
def test_refused_documents(body: bytes, message: str) -> None:
    with pytest.raises(omi.BadDocument, match=message):
        omi.parse(body)


def test_wrong_root_elements() -> None:
    with pytest.raises(omi.BadDocument, match="expected an <event_change>"):
        omi.change_key("E", omi.parse(b"<event/>"))
    with pytest.raises(omi.BadDocument, match="expected an <event> or <event_list>"):
        omi.events(omi.parse(b"<event_change/>"))
    with pytest.raises(omi.BadDocument, match="holds no <event>"):
        omi.events(omi.parse(b"<event_list/>"))


def test_forwarded_event_key_and_answer() -> None:
    body = f"""<event xmlns="{NS}"><id>abc-1</id><title>T &amp; U</title><severity>minor</severity>
      <time_created>2026-11-22T10:00:00Z</time_created><drilldown_url>https://omi/x</drilldown_url>
      <assigned_user><login_name>ana</login_name></assigned_user><assigned_group><name>Ops</name></assigned_group>
      <node_hints><dns_name>db1.example</dns_name></node_hints>
      <related_ci><configuration_item><display_label>DB</display_label></configuration_item></related_ci>
      <custom_attribute_list><custom_attribute><name>Ticket-Id</name><value>INC42</value></custom_attribute>
      </custom_attribute_list><description>{"d" * 9000}</description></event>""".encode()
    (event,), as_list = omi.events(omi.parse(body))
    assert not as_list and event.external_id == "abc-1" and event.sequence_number is None
    assert event.key["TITLE"] == "T & U" and event.key["NODE"] == "db1.example"
    assert event.key["ASSIGNED_USER"] == "ana" and event.key["ASSIGNED_GROUP"] == "Ops"
    assert event.key["RELATED_CI"] == "DB" and event.key["CA_TICKET_ID"] == "INC42"
    assert event.key["TIME_CREATED"] == "2026-11-22T10:00:00Z" and len(event.key["DESCRIPTION"]) == omi.MAX_VALUE
    answer = ET.fromstring(omi.events_answer([event], False))
    assert answer.tag == f"{{{NS}}}event" and answer.findtext(f"{{{NS}}}id") == "abc-1"


def test_answers_carry_any_id_as_valid_xml() -> None:
    for event_id in ("a<b>&c", "line\nbreak\r", "tab\t", "ctrl\x01char", "ü€😀"):
        root = ET.fromstring(omi.change_answer(event_id))
        target = root.find(f"{{{NS}}}event_ref/{{{NS}}}target_id")
        assert target is not None and target.text == event_id.replace("\x01", "").replace("\r", "\r")
        assert root.find(f"{{{NS}}}changed_properties") is not None


# -- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parsed", [
    ("0.0.0.0:8443", ("0.0.0.0", 8443)), ("[::1]:80", ("::1", 80)), ("localhost:0", ("localhost", 0)),
    ("omi.example.com:443", ("omi.example.com", 443))])
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert config.parse_address(text) == parsed


@pytest.mark.parametrize("text", ["8443", "host:", ":8443", "host:99999", "a b:1", "[::1:80"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(UsageError, match="bad listen address"):
        config.parse_address(text)


def test_resolve_merges_the_file_and_the_command_line(home: Home, tmp_path) -> None:
    assert config.resolve(home) is None  # nothing asked, nothing listens
    cert = home.root / "conf" / "c.pem"
    cert.write_text("x")
    (home.root / "conf" / "ombridge.conf").write_text(
        '[listen]\naddress = "0.0.0.0:8443"\ntls_cert = "conf/c.pem"\ntls_key = "conf/c.pem"\nomi_base = "opr/"\n')
    got = config.resolve(home)
    assert got == config.ListenConfig("0.0.0.0", 8443, str(cert), str(cert), "/opr", 1 << 20,
                                      processes=config.default_processes()) and got.tls
    assert config.resolve(home, "127.0.0.1:9000", max_body=4096).port == 9000
    assert config.resolve(home, processes=0).processes == 0
    for bad, said in (('max_body = "big"', "listen.max_body is a number of bytes"),
                      ('omi_base = 5', "listen.omi_base must be a string"),
                      ('processes = 17', "listen.processes is a number from 0"),
                      ('processes = true', "listen.processes is a number from 0")):
        (home.root / "conf" / "ombridge.conf").write_text(f'[listen]\naddress = "0.0.0.0:8443"\n{bad}\n')
        with pytest.raises(UsageError, match=said):  # (one sentence, never a traceback)
            config.resolve(home)
    (home.root / "conf" / "ombridge.conf").write_text(
        '[listen]\naddress = "0.0.0.0:8443"\ntls_cert = "conf/c.pem"\ntls_key = "conf/c.pem"\nomi_base = "opr/"\n')
    with pytest.raises(UsageError, match="between 1024 bytes"):
        config.resolve(home, max_body=10)
    with pytest.raises(UsageError, match="hide one of ombridge's own paths"):
        config.resolve(home, omi_base="/api/x")
    with pytest.raises(UsageError, match="does not exist"):
        config.resolve(home, tls_cert=str(tmp_path / "missing.pem"))
    (home.root / "conf" / "ombridge.conf").write_text("[listen\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        config.resolve(home)


# -- users ------------------------------------------------------------------------------------------


def test_hashes_are_salted_scrypt_and_verify() -> None:
    a, b = users.hash_password("correct horse"), users.hash_password("correct horse")
    assert a != b and a.startswith("scrypt$15$8$1$") and "correct" not in a
    assert users.verify_password("correct horse", a) and not users.verify_password("correct horsf", a)
    assert not users.verify_password("x", "md5$nonsense") and not users.verify_password("x", users.DUMMY_HASH)


def test_user_commands(home: Home) -> None:
    assert omb(home, "user", "add", "omi", stdin="first-password\n").stdout == "user omi added\n"
    again = omb(home, "user", "add", "omi", stdin="first-password\n", check=False)
    assert again.returncode == 2 and "user omi exists" in again.stderr
    short = omb(home, "user", "add", "other", stdin="short\n", check=False)
    assert short.returncode == 2 and "too short" in short.stderr
    assert omb(home, "user", "add", "bad:name", stdin="long-enough-pw\n", check=False).returncode == 2
    assert omb(home, "user", "add", "x", stdin="", check=False).returncode == 2
    listed = json.loads(omb(home, "user", "list", "--json").stdout)
    assert [u["name"] for u in listed] == ["omi"] and set(listed[0]) == {"name", "created_at", "updated_at"}
    conn = store.connect(home)
    first = users.hashes(conn)["omi"]
    omb(home, "user", "passwd", "omi", stdin="second-password\n")
    assert users.verify_password("second-password", users.hashes(conn)["omi"]) and users.hashes(conn)["omi"] != first
    assert omb(home, "user", "passwd", "nobody", stdin="second-password\n", check=False).returncode == 2
    omb(home, "user", "remove", "omi")
    assert users.hashes(conn) == {}
    assert omb(home, "user", "remove", "omi", check=False).returncode == 2
    conn.close()
    assert "--password" not in omb(home, "user", "add", "--help").stdout


def test_user_library_errors(conn) -> None:
    users.add_user(conn, "a.b@c-d_e", "password-1")
    with pytest.raises(NotFound):
        users.remove_user(conn, "zz")
    with pytest.raises(UsageError, match="control characters"):
        users.check_password("abc\ndefghij")


# -- authentication -----------------------------------------------------------------------------------


def _basic(name: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


def test_throttle_grows_is_bounded_and_forgets() -> None:
    now = [0.0]
    t = auth.FailureThrottle(clock=lambda: now[0])
    delays = []
    for _ in range(9):
        delays.append(t.delay("1.2.3.4"))
        t.failed("1.2.3.4")
    assert delays == [0, 0, 0, 0.5, 1, 2, 4, 8, 8]
    assert t.delay("5.6.7.8") == 0
    now[0] += auth.FORGET_AFTER + 1
    assert t.delay("1.2.3.4") == 0
    for n in range(auth.MAX_ADDRESSES + 100):
        t.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(t) == auth.MAX_ADDRESSES
    t.failed("9.9.9.9")
    t.succeeded("9.9.9.9")
    assert t.count("9.9.9.9") == 0


def test_authenticator_remembers_matches_and_sees_changes() -> None:
    table = {"omi": users.hash_password("pw-number-1")}
    loads = []

    def load() -> dict[str, str]:
        loads.append(1)
        return dict(table)

    now = [100.0]
    a = auth.Authenticator(load, clock=lambda: now[0])

    async def check(header: bytes | None) -> str | None:
        return await a.check(header, "127.0.0.1")

    assert asyncio.run(check(_basic("omi", "pw-number-1"))) == "omi"
    started = time.perf_counter()
    for _ in range(200):
        assert asyncio.run(check(_basic("omi", "pw-number-1"))) == "omi"
    assert (time.perf_counter() - started) / 200 < 0.02  # remembered: no scrypt per request
    assert asyncio.run(check(_basic("omi", "wrong-password"))) is None
    assert asyncio.run(check(None)) is None and asyncio.run(check(b"Bearer xyz")) is None
    assert asyncio.run(check(_basic("nobody", "pw-number-1"))) is None
    # a missing or non-Basic header is a 401 but no guess: only the two wrong passwords count
    assert a.failures == 4 and a.throttle.count("127.0.0.1") == 2
    table["omi"] = users.hash_password("pw-number-2")  # `user passwd`: seen after REFRESH seconds
    now[0] += auth.REFRESH
    a.throttle.succeeded("127.0.0.1")
    assert asyncio.run(check(_basic("omi", "pw-number-1"))) is None
    a.throttle.succeeded("127.0.0.1")
    assert asyncio.run(check(_basic("omi", "pw-number-2"))) == "omi"
    del table["omi"]  # `user remove`
    now[0] += auth.REFRESH
    assert asyncio.run(check(_basic("omi", "pw-number-2"))) is None


# -- group commit -------------------------------------------------------------------------------------


def test_group_commit_shares_transactions_and_isolates_a_bad_request(home: Home) -> None:
    woken = []
    committer = GroupCommitter(store.Store(home), wake=lambda: woken.append(1))
    committer.start()

    async def many() -> list[object]:
        good = [committer.commit([("event/update", {"ID": f"G{n}", "STATE": "closed"})]) for n in range(50)]
        bad = committer.commit([("no/such", {"ID": "B"})])
        missing = committer.commit([("event/update", {"ID": "M"})])
        return await asyncio.gather(*good, bad, missing, return_exceptions=True)

    try:
        results = asyncio.run(many())
    finally:
        committer.stop()
    assert all(isinstance(r, list) and r[0].event_id for r in results[:50])
    assert isinstance(results[50], NotFound) and isinstance(results[51], UsageError)
    assert committer.events == 50 and committer.commits < 50 and woken
    conn = store.connect(home)
    assert conn.execute("SELECT count(*) FROM events WHERE topic = 'event/update'").fetchone()[0] == 50
    conn.close()


def test_commit_refused_once_stopping(home: Home) -> None:
    committer = GroupCommitter(store.Store(home))
    committer.start()
    committer.stop()

    async def late() -> list[events.SendResult]:
        return await committer.commit([("event/update", {"ID": "L", "STATE": "closed"})])

    with pytest.raises(Exception, match="stopping"):
        asyncio.run(late())
    assert os.path.exists(home.db)


# -- reading bodies -----------------------------------------------------------------------------------


def test_a_body_that_never_arrives_or_grows_too_large_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.web import app as web_app

    class Slow:
        headers = {"content-length": "100"}

        async def receive(self) -> dict:
            await asyncio.sleep(3600)
            return {}

    class Chunked:
        headers: dict[str, str] = {}

        async def receive(self) -> dict:
            return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    monkeypatch.setattr(web_app, "BODY_TIMEOUT", 0.1)
    with pytest.raises(web_app.Refused) as slow:
        asyncio.run(web_app.read_body(Slow(), 4096))
    assert slow.value.status == 408 and slow.value.headers == {"Connection": "close"}
    with pytest.raises(web_app.Refused) as large:
        asyncio.run(web_app.read_body(Chunked(), 4096))
    assert large.value.status == 413
