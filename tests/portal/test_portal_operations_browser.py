"""The host-agent and audit pages in a real Chromium against a real platform. An operator (Owner at the
subscription, which holds Lanyard/hosts/* and Lanyard/audit/read) creates a join token in the portal; the
test joins a host with it over the platform's own /lanyard/v1/join (as an agent would, with its own
certificate) and gets a token as that host; the operator sees the host, finds that token's audit record
by the host's app id and action, pages through the host's records, sees the API's 400 for a bad time
filter, and removes the host behind Yes/No. A Reader at one group only is refused on both pages with
the API's message. Screenshots go to reports/portal/."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.agent.credential import new_host_certificate
from lanyard.client.assertion import CertificateKey
from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import SHOTS, person, sign_in

AGENT_AUDIENCE = "api://lanyard-host-agent"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _join(platform: RunningPlatform, token: str, name: str) -> tuple[dict[str, Any], str]:
    """Join as a host agent does (its own key and self-signed certificate), then get a token as it."""
    cert, key = new_host_certificate(name, time.time(), 86400)
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    with platform.http() as http:
        answer = http.post(
            f"{platform.authority}/lanyard/v1/join",
            json={"token": token, "name": name, "certificate": base64.b64encode(der).decode()},
        )
        assert answer.status_code == 200, answer.text
        joined = answer.json()
        signer = CertificateKey.from_pem(cert, key)
        granted = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": joined["clientId"],
                "client_assertion_type": JWT_BEARER,
                "client_assertion": signer.assertion(joined["clientId"], platform.token_url_v2),
                "scope": f"{AGENT_AUDIENCE}/.default",
            },
        )
    assert granted.status_code == 200, granted.text
    return joined, str(granted.json()["access_token"])


def _ref(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return hashlib.sha256(str(claims["uti"]).encode()).hexdigest()[:16]


def test_operator_sees_hosts_and_audit_and_a_reader_is_refused(platform: RunningPlatform, chromium: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    host_name = f"ops-host-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", f"ops-rg-{tag}", "-l", "westus")
    subscription = group["id"].split("/resourceGroups/")[0]
    operator = person(platform, "Otto Operator", "Owner", subscription)
    reader = person(platform, "Rita Reader", "Reader", group["id"])
    SHOTS.mkdir(parents=True, exist_ok=True)

    context, page = sign_in(chromium, platform, operator)
    page.get_by_role("link", name="Host agents").click()
    assert page.get_by_role("heading", name="Host agents").is_visible()
    page.get_by_label("Host name (optional)").fill(host_name)
    page.get_by_role("button", name="Create join token").click()
    join_token = page.locator("#join-token").inner_text()
    assert join_token.startswith("lyj_")
    # Shown once: the hosts page itself never carries it again.
    page.goto(f"{platform.authority}/portal/hosts")
    assert join_token not in page.content()

    joined, host_token = _join(platform, join_token, host_name)
    page.reload()
    row = page.get_by_role("row").filter(has_text=host_name)
    assert row.get_by_role("cell", name=joined["hostId"], exact=True).is_visible()
    assert row.get_by_role("cell", name=joined["objectId"], exact=True).is_visible()
    (listed,) = [h for h in cli_json(platform.home, "host", "list") if h["hostId"] == joined["hostId"]]
    assert listed["credentialExpiresOn"] and listed["joinedAt"]  # the certificate it joined with ends in a day
    assert row.get_by_role("cell", name=listed["credentialExpiresOn"], exact=True).is_visible()
    page.screenshot(path=str(SHOTS / "hosts-joined.png"), full_page=True)

    # Place an app's identities on the host, then take them off again.
    site = cli_json(platform.home, "webapp", "create", "-g", group["name"], "-n", f"ops-app-{uuid.uuid4().hex[:6]}",
                    "--assign-identity", "[system]")  # fmt: skip
    page.get_by_label(f"Resource id to place on {host_name}").fill(site["id"])
    page.get_by_role("button", name=f"Place on {host_name}").click()
    (listed,) = [h for h in cli_json(platform.home, "host", "list") if h["hostId"] == joined["hostId"]]
    assert [p.lower() for p in listed["placements"]] == [site["id"].lower()]
    page.get_by_role("button", name=f"Take {site['name']} off {host_name}").click()
    (listed,) = [h for h in cli_json(platform.home, "host", "list") if h["hostId"] == joined["hostId"]]
    assert listed["placements"] == []

    # The audit record of the token the host got, found with the page's filters.
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_label("Principal or app id").fill(joined["clientId"])
    page.get_by_label("Action (prefix, e.g. token.issue)").fill("token.issue")
    page.get_by_role("button", name="Filter").click()
    record = page.get_by_role("row").filter(has_text=_ref(host_token))
    assert record.count() == 1
    assert record.get_by_role("cell", name="granted", exact=True).is_visible()
    assert record.get_by_role("cell", name=joined["clientId"], exact=True).is_visible()
    assert host_token not in page.content()
    page.screenshot(path=str(SHOTS / "audit-filtered.png"), full_page=True)

    # The host's records one per page, newest first: its token, then its join, by the API's continuation.
    page.get_by_label("Action (prefix, e.g. token.issue)").fill("")
    page.get_by_label("Records per page").fill("1")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("row").filter(has_text=_ref(host_token)).count() == 1
    assert not page.get_by_role("cell", name="credential.host.join", exact=True).count()
    page.get_by_role("link", name="Next page").click()
    assert page.get_by_role("cell", name="credential.host.join", exact=True).is_visible()
    assert not page.get_by_role("row").filter(has_text=_ref(host_token)).count()
    assert page.get_by_role("link", name="First page").is_visible()

    with page.expect_response(lambda r: "/portal/audit" in r.url) as bad:
        page.get_by_label("Since (ISO 8601 UTC or epoch seconds)").fill("yesterday")
        page.get_by_role("button", name="Filter").click()
    assert bad.value.status == 400
    assert "InvalidParameter: since must be an ISO 8601 time" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "audit-bad-filter.png"), full_page=True)

    # Remove, behind a confirmation; No changes nothing, Yes removes it.
    page.goto(f"{platform.authority}/portal/hosts")
    page.get_by_role("link", name=f"Remove host {host_name}").click()
    assert page.get_by_role("heading", name=f"Remove host {host_name}?").is_visible()
    page.screenshot(path=str(SHOTS / "hosts-remove-confirm.png"), full_page=True)
    page.get_by_role("link", name="No").click()
    assert page.get_by_role("row").filter(has_text=host_name).count() == 1
    page.get_by_role("link", name=f"Remove host {host_name}").click()
    page.get_by_role("button", name="Yes").click()
    assert f"Host {host_name} was removed." in page.get_by_role("status").inner_text()
    assert not page.get_by_role("row").filter(has_text=host_name).count()
    assert joined["hostId"] not in [h["hostId"] for h in cli_json(platform.home, "host", "list")]
    context.close()

    # A Reader at one group only: the operator API's own refusal, on the page.
    context, page = sign_in(chromium, platform, reader)
    page.get_by_role("link", name="Host agents").click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "hosts-reader-refused.png"), full_page=True)
    page.get_by_role("link", name="Audit trail").click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    assert not page.get_by_role("row").filter(has_text=_ref(host_token)).count()
    context.close()
