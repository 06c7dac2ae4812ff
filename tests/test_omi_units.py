"""Unit tests of the OMi pieces: the sync-back body, the [omi] settings, the external id."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from bridge.errors import UsageError
from bridge.home import Home
from bridge.syncback import omisync
from bridge.web import omi

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)

NS = "{http://www.hp.com/2009/software/opr/data_model}"


def test_the_body_escapes_every_value() -> None:
    hostile = '</current_value><evil/>&amp; "q" \r\n]]>'
    body = omisync.change_body("id<&>", {"ID": "x", "STATE": "closed", "TITLE": hostile, "ANNOTATION": hostile,
                                         "ASSIGNED_USER": "u<", "ASSIGNED_GROUP": "g&", "CA_CUSTOMER": "Globex<"})
    root = ET.fromstring(body)
    assert root.findtext(f"{NS}event_ref/{NS}target_id") == "id<&>"
    changes = {c.tag.split("}")[1]: c for c in root.find(f"{NS}changed_properties")}
    assert changes["string_property_change"].findtext(f"{NS}current_value") == hostile
    assert changes["annotation_property_change"].findtext(f"{NS}change_operation") == "insert"
    assert changes["state_change"].findtext(f"{NS}current_value") == "closed"
    assert changes["user_property_change"].findtext(f"{NS}current_user_name") == "u<"
    assert changes["group_property_change"].findtext(f"{NS}current_group_name") == "g&"
    ca = changes["custom_attribute_property_change"]
    assert (ca.findtext(f"{NS}name"), ca.findtext(f"{NS}current_value")) == ("CUSTOMER", "Globex<")
    assert not root.findall(".//evil")


def _conf(tmp_path, text: str) -> Home:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "ombridge.conf").write_text(text)
    return Home(tmp_path)


def test_settings_are_checked(tmp_path) -> None:
    assert omisync.load_config(Home(tmp_path)).external_id == ("original_id", "id")
    home = _conf(tmp_path, '[omi]\nexternal_id = ["custom_attribute:SourceEventID", "id"]\n'
                           'gateway = "https://gw.example.com:8443"\nuser = "me"\n')
    cfg = omisync.load_config(home)
    assert cfg.external_id == ("custom_attribute:SourceEventID", "id")
    assert cfg.url("a/b") == "https://gw.example.com:8443/opr-gateway/rest/9.10/synchronization/event_change/a%2Fb"
    for bad, said in (('external_id = "id"', "omi.external_id"), ('external_id = ["has space"]', "omi.external_id"),
                      ('gateway = "ftp://x"', "omi.gateway"), ('gateway = "https://u:p@x"', "omi.gateway"),
                      ('passwd = "x"', "unknown setting(s) omi.passwd"), ('user = ""', "omi.user")):
        with pytest.raises(UsageError, match=said.replace("(", r"\(").replace(")", r"\)")):
            omisync.load_config(_conf(tmp_path, f"[omi]\n{bad}\n"))
    with pytest.raises(UsageError, match="gateway is not set"):
        omisync.OmiConfig().url()


def test_the_external_id_candidates() -> None:
    xml = (f'<event xmlns="{NS[1:-1]}"><id>omi</id><original_id>orig</original_id><title>t</title>'
           "<custom_attribute_list><custom_attribute><name>SourceEventID</name><value>src</value></custom_attribute>"
           "</custom_attribute_list></event>").encode()
    root = omi.parse(xml)
    for candidates, expected in ((("custom_attribute:SourceEventID", "id"), "src"),
                                 (("custom_attribute:sourceeventid",), "src"), (("original_id", "id"), "orig"),
                                 (("title",), "t"), (("nothing", "id"), "omi"), (("nothing",), "omi")):
        (f,), _ = omi.events(root, candidates)
        assert (f.key["ID"], f.key["OMI_ID"], f.omi_id) == (expected, "omi", "omi")


def test_omi_test_says_what_is_missing_or_unreachable(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = _conf(tmp_path, f'[omi]\ngateway = "http://127.0.0.1:{port}"\n')
    with pytest.raises(UsageError, match=r"\[omi\] user is not set"):
        omisync.test_gateway(home)
    home = _conf(tmp_path, f'[omi]\ngateway = "http://127.0.0.1:{port}"\nuser = "me"\n')
    with pytest.raises(UsageError, match="no OMi password is stored: run `ombridge omi password`"):
        omisync.test_gateway(home)
    omisync.set_password(home, "secret-one")
    assert oct((tmp_path / "conf" / "omi-password").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(UsageError, match="cannot be reached") as raised:
        omisync.test_gateway(home, timeout=5)
    assert "secret-one" not in str(raised.value)
    with pytest.raises(UsageError, match="one non-empty line"):
        omisync.set_password(home, "two\nlines")
