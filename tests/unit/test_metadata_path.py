"""How the local metadata endpoints read a request's path: the spellings real clients send for one resource."""

from __future__ import annotations

import pytest

from lanyard.agent.wire import metadata_path


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token"),
        ("/metadata/identity/oauth2/token/", "/metadata/identity/oauth2/token"),  # msal-node
        ("//metadata/identity/oauth2/token", "/metadata/identity/oauth2/token"),  # msal4j
        ("/metadata//identity///oauth2/token//", "/metadata/identity/oauth2/token"),
        ("/", "/"),
        ("//", "/"),
        ("/metadata/identity/oauth2/tokens", "/metadata/identity/oauth2/tokens"),
    ],
)
def test_spellings(sent: str, read: str) -> None:
    assert metadata_path({"type": "http", "path": sent}) == read
