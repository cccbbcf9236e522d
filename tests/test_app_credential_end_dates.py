"""Application secrets honour their end dates: Graph addPassword takes endDateTime, and a secret past
it gets Entra's error for an expired secret (AADSTS7000222, 401)."""

from __future__ import annotations

import datetime as dt
import time

from tests.conftest import RunningPlatform, cli_json


def test_a_secret_past_its_end_date_is_refused_with_aadsts7000222(platform: RunningPlatform) -> None:
    app = cli_json(platform.home, "ad", "sp", "create-for-rbac", "--name", "short-lived-secret")
    admin = platform.endpoints["admin"]
    graph = platform.endpoints["graph"]
    form = {"grant_type": "client_credentials", "scope": f"{graph}/.default"}
    with platform.http() as http:
        admin_token = http.post(
            platform.token_url_v2,
            data={**form, "client_id": admin["client_id"], "client_secret": admin["client_secret"]},
        ).json()["access_token"]
        objects = http.get(
            f"{graph}/v1.0/applications",
            params={"$filter": f"appId eq '{app['appId']}'"},
            headers={"Authorization": f"Bearer {admin_token}"},
        ).json()["value"]
        ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
        added = http.post(
            f"{graph}/v1.0/applications/{objects[0]['id']}/addPassword",
            json={"passwordCredential": {"displayName": "3 s", "endDateTime": ends.strftime("%Y-%m-%dT%H:%M:%SZ")}},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert added.status_code == 200, added.text
        secret = added.json()["secretText"]
        assert added.json()["endDateTime"] == ends.strftime("%Y-%m-%dT%H:%M:%SZ")
        grant = {**form, "client_id": app["appId"], "client_secret": secret}
        assert http.post(platform.token_url_v2, data=grant).status_code == 200
        time.sleep(max(0.0, ends.timestamp() - time.time() + 1.5))
        expired = http.post(platform.token_url_v2, data=grant)
        assert expired.status_code == 401, expired.text
        assert expired.json()["error"] == "invalid_client" and "AADSTS7000222" in expired.json()["error_description"]
        # The app's other secret is untouched by the first one's end.
        other = {**form, "client_id": app["appId"], "client_secret": app["password"]}
        assert http.post(platform.token_url_v2, data=other).status_code == 200
        past = http.post(
            f"{graph}/v1.0/applications/{objects[0]['id']}/addPassword",
            json={"passwordCredential": {"endDateTime": "2001-01-01T00:00:00Z"}},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert past.status_code == 400 and past.json()["error"]["code"] == "Request_BadRequest"
