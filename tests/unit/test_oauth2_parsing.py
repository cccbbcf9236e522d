from __future__ import annotations

import pytest

from lanyard.core.errors import InvalidRequest, InvalidResource, InvalidScope, OAuthError
from lanyard.protocol.oauth2 import parse_form, parse_token_request, resource_from_scope

CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("scope", "resource"),
    [
        ("https://vault.azure.net/.default", "https://vault.azure.net"),
        ("https://management.core.windows.net//.default", "https://management.core.windows.net/"),
        ("api://my-app/.default", "api://my-app"),
        ("openid profile offline_access https://x.example/.default", "https://x.example"),
        (f"{CLIENT}/.default", CLIENT),
    ],
)
def test_scope_to_resource(scope: str, resource: str) -> None:
    assert resource_from_scope(scope) == resource


@pytest.mark.parametrize("scope", ["", "openid", "https://a/.default https://b/.default", "https://a/read"])
def test_bad_scopes(scope: str) -> None:
    with pytest.raises(InvalidScope):
        resource_from_scope(scope)


@pytest.mark.parametrize("scope", ["not-a-uri/.default", "/.default"])
def test_bad_resources_in_scope(scope: str) -> None:
    with pytest.raises(InvalidResource):
        resource_from_scope(scope)


def test_repr_hides_the_secret() -> None:
    request = parse_token_request(
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": "hunter2-secret",
            "scope": "https://x/.default",
        },
        "v2",
    )
    assert "hunter2" not in repr(request) and "hunter2" not in str(request)


def test_error_body_shape() -> None:
    with pytest.raises(OAuthError) as caught:
        parse_token_request({"grant_type": "client_credentials"}, "v2")
    body = caught.value.body()
    assert body["error"] == "invalid_request" and body["error_codes"] == [900144]
    assert {"timestamp", "trace_id", "correlation_id", "error_description"} <= set(body)


def test_form_rejects_duplicates_and_junk() -> None:
    assert parse_form(b"a=1&b=2") == {"a": "1", "b": "2"}
    assert parse_form(b"") == {}
    for bad in (b"a=1&a=2", b"\xff\xfe", b"a" * 70_000):
        with pytest.raises(InvalidRequest):
            parse_form(bad)
