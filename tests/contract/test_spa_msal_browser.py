"""A single-page app with the real @azure/msal-chromium (from npm, unmodified) in Debian's Chromium: a page
served on http://localhost signs a person in with loginRedirect (code + PKCE, the answer in the fragment),
msal redeems the code cross-origin at the token endpoint (CORS), then acquireTokenSilent with
forceRefresh redeems the SPA's refresh token cross-origin too. The token verifies against the published
keys and names the person."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningPlatform, cli_json, secret_token, verify_with_discovery
from tests.portal.people import SHOTS
from tests.support.clients import ClientProgram

ARM = "https://management.azure.com"
PASSWORD = "Spa-Sign-In-Pa55"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>spa</title><script src="/msal-chromium.min.js"></script></head>
<body><button id="go">Sign in</button><pre id="out"></pre>
<script>
const config = %(config)s;
const out = (value) => { document.getElementById("out").textContent = JSON.stringify(value); };
const app = new msal.PublicClientApplication({
  auth: {clientId: config.clientId, authority: config.authority, knownAuthorities: [config.host],
         redirectUri: config.redirectUri},
  cache: {cacheLocation: "sessionStorage"},
});
(async () => {
  await app.initialize();
  const result = await app.handleRedirectPromise();
  document.getElementById("go").onclick = () => app.loginRedirect({scopes: config.scopes});
  if (!result) return;
  const again = await app.acquireTokenSilent({scopes: config.scopes, account: result.account, forceRefresh: true});
  out({oid: result.idTokenClaims.oid, upn: result.account.username, token: result.accessToken,
       refreshed: again.accessToken, refreshedFromCache: again.fromCache});
})().catch((e) => out({error: String(e), code: e.errorCode || ""}));
</script></body></html>
"""


class _SpaServer:
    """The SPA's own origin: one page and the msal-chromium bundle, on loopback."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle.read_bytes()
        self.page = b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                body, kind = (
                    (outer.bundle, "text/javascript") if path == "/msal-chromium.min.js" else (outer.page, "text/html")
                )
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def spa_server(spa_client: ClientProgram) -> Iterator[_SpaServer]:
    bundle = Path(spa_client.argv[0])
    server = _SpaServer(bundle)
    yield server
    server.close()


def test_msal_browser_signs_a_person_in_and_refreshes_cross_origin(
    platform: RunningPlatform,
    chromium: Any,
    spa_server: _SpaServer,
) -> None:
    upn = f"spa-{uuid.uuid4().hex[:6]}@spa.example"
    person = cli_json(
        platform.home,
        "ad",
        "user",
        "create",
        "--display-name",
        "Sam Spa",
        "--user-principal-name",
        upn,
        "--password",
        PASSWORD,
    )
    redirect = f"{spa_server.origin}/"
    admin, graph = platform.endpoints["admin"], platform.endpoints["graph"]
    token = secret_token(platform, admin["client_id"], admin["client_secret"], graph)
    with platform.http() as http:
        made = http.post(
            f"{graph}/v1.0/applications",
            headers={"Authorization": f"Bearer {token}"},
            json={"displayName": f"spa-{uuid.uuid4().hex[:6]}", "spa": {"redirectUris": [redirect]}},
        )
        assert made.status_code == 201, made.text
    app_id = made.json()["appId"]
    cli_json(platform.home, "ad", "sp", "create", "--id", app_id)
    config = {
        "clientId": app_id,
        "authority": f"{platform.authority}/{platform.tenant_id}",
        "host": urlsplit(platform.authority).netloc,
        "redirectUri": redirect,
        "scopes": [f"{ARM}/.default"],
    }
    spa_server.page = (PAGE % {"config": json.dumps(config)}).encode()

    # The platform's CA is not in Chromium's store here; the TLS itself is covered by the httpx tests.
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    seen: list[str] = []
    page.on("request", lambda r: seen.append(f"{r.method} {r.url.split('?')[0]}"))
    page.goto(redirect)
    page.locator("#go").click()
    page.locator('input[name="username"]').fill(upn)
    page.locator('input[name="password"]').fill(PASSWORD)
    page.locator('input[name="password"]').press("Enter")
    page.wait_for_url(f"{redirect}*")
    page.locator("#out").filter(has_text="{").wait_for(timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "spa-msal-chromium.png"), full_page=True)
    result = json.loads(page.locator("#out").inner_text())
    context.close()
    assert "error" not in result, (result, seen)
    assert result["oid"] == person["id"] and result["upn"].lower() == upn.lower()
    assert verify_with_discovery(platform, result["token"], ARM)["oid"] == person["id"]
    refreshed = verify_with_discovery(platform, result["refreshed"], ARM)
    assert refreshed["oid"] == person["id"] and result["refreshed"] != result["token"]
    assert result["refreshedFromCache"] is False
    token_posts = [r for r in seen if r.startswith("POST ") and r.endswith("/oauth2/v2.0/token")]
    assert len(token_posts) >= 2, seen  # the code, then the refresh token, both from the page's origin
