"""Json.NET's leniency as ARM parses request bodies, and the resource-list `$filter` az sends."""

from __future__ import annotations

import pytest

from lanyard.arm import namespaces, web
from lanyard.core.errors import ArmError
from lanyard.protocol.lenient_json import LenientJsonError, loads, to_strict


def test_standard_json_is_unchanged() -> None:
    assert loads(b'{"a": [1, -2.5e3, "x//y", "/*z*/"], "b": null}') == {"a": [1, -2500.0, "x//y", "/*z*/"], "b": None}


def test_what_az_deployment_sends_parses() -> None:
    # az splices the template file's own text after an unquoted key (azure-cli resource/custom.py).
    body = (
        b'{"properties": {"parameters": {"appName": {"value": "a"}}, "mode": "Incremental", template:{\r\n'
        b'  // a comment\r\n  "$schema": "https://schema.management.azure.com/x#", /* block */\r\n'
        b'  "resources": [ {"name": "[concat(\'a\', \'b\')]",}, ],\r\n}}}'
    )
    parsed = loads(body)
    assert isinstance(parsed, dict)
    props = parsed["properties"]
    assert props["mode"] == "Incremental" and props["parameters"] == {"appName": {"value": "a"}}
    assert props["template"]["$schema"] == "https://schema.management.azure.com/x#"
    assert props["template"]["resources"] == [{"name": "[concat('a', 'b')]"}]


def test_single_quotes_and_literals() -> None:
    assert loads(b"{name: 'it\\'s \"x\"', ok: true, none: null, n: 1e3}") == {
        "name": 'it\'s "x"',
        "ok": True,
        "none": None,
        "n": 1000.0,
    }


@pytest.mark.parametrize("raw", [b'{"a": ', b'{"a": "open', b"{/* never closed", b"{a: 'open", b"\xff\xfe"])
def test_broken_input_is_refused(raw: bytes) -> None:
    with pytest.raises(LenientJsonError):
        loads(raw)


def test_to_strict_keeps_strings_verbatim() -> None:
    assert to_strict('{"a,]": "b, }"}') == '{"a,]": "b, }"}'


def test_resource_filter() -> None:
    text = "resourceType eq 'Microsoft.KeyVault/vaults' and name eq 'it''s'"
    assert namespaces.parse_resource_filter(text) == {"resourcetype": "Microsoft.KeyVault/vaults", "name": "it's"}
    assert namespaces.parse_resource_filter("resourceGroup eq 'rg'") == {"resourcegroup": "rg"}
    assert namespaces.parse_resource_filter("") == {}
    with pytest.raises(ArmError) as refused:
        namespaces.parse_resource_filter("location eq 'westeurope'")
    assert refused.value.body()["error"]["code"] == "InvalidFilterInQueryString"


def test_namespace_documents() -> None:
    doc = namespaces.namespace_json("s", "microsoft.web")
    assert doc["namespace"] == "Microsoft.Web" and doc["registrationState"] == "Registered"
    sites = next(t for t in doc["resourceTypes"] if t["resourceType"] == "sites")
    assert sites["apiVersions"][0] == sites["defaultApiVersion"]
    with pytest.raises(ArmError) as unknown:
        namespaces.namespace_json("s", "Microsoft.Nothing")
    assert unknown.value.status_value == 404


def test_site_name_check() -> None:
    assert web.check_name_availability({"name": "free-name"}, {"taken"})["nameAvailable"] is True
    taken = web.check_name_availability({"name": "Taken"}, {"taken"})
    assert taken["nameAvailable"] is False and taken["reason"] == "AlreadyExists"
    assert web.check_name_availability({"name": "-bad-"}, set())["reason"] == "Invalid"
    with pytest.raises(ArmError):
        web.check_name_availability({"type": "Site"}, set())
