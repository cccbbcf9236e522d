"""Sign-in grants against an injected clock: expired device codes and authorization codes, refresh
token reuse inside and after the grace (after it, the whole family is revoked), the password backoff
refilling, and a disabled user's refresh tokens ending. A real store (SQLite) and real signing keys."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import uuid
from pathlib import Path

import pytest

from lanyard.core.clock import FrozenClock
from lanyard.core.errors import AuthorizationPending, ExpiredToken, InvalidGrant
from lanyard.crypto.barrier import Barrier
from lanyard.directory.clients import AZURE_CLI
from lanyard.directory.keys import SigningKeys, ensure_signing_key
from lanyard.directory.passwords import hash_password
from lanyard.directory.redirects import SPA
from lanyard.directory.service import Directory, DirectoryConfig
from lanyard.directory.signin import (
    CODE_LIFETIME,
    DEVICE_LIFETIME,
    REFRESH_REUSE_GRACE,
    PasswordLimits,
    SignIn,
    SignInThrottled,
)
from lanyard.protocol.oauth2 import UserGrantRequest, parse_user_grant
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage import people_repo as people
from lanyard.storage.db import Store, make_engine, migrate

TENANT = "11111111-2222-3333-4444-555555555555"
PASSWORD = "Corr3ct-Horse"
ARM = "https://management.azure.com/.default offline_access openid"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def signin(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[SignIn, FrozenClock, people.UserRecord]:
    clock = FrozenClock(1_800_000_000.0)
    url = request.getfixturevalue("pg_database") if request.param == "postgres" else f"sqlite:///{tmp_path / 'p.db'}"
    store = Store(make_engine(url), clock.now)
    request.addfinalizer(store.close)
    migrate(store.engine)
    barrier = Barrier(os.urandom(32))
    ensure_signing_key(store, barrier, clock)
    directory = Directory(
        store,
        barrier,
        SigningKeys(store, barrier),
        clock,
        DirectoryConfig("https://localhost:1", ("https://localhost:1",)),
    )
    user = people.UserRecord(
        str(uuid.uuid4()),
        TENANT,
        "pat@x.example",
        "Pat",
        "pat",
        True,
        hash_password(PASSWORD),
        clock.now(),
        clock.now(),
    )
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "t", clock.now())
        people.add_user(s, user)
    directory._load_tenants()  # a node learns tenants from the feed; here, read them once
    return SignIn(directory, PasswordLimits.of(3, 50, 30.0, clock)), clock, user


def grant(**form: str) -> UserGrantRequest:
    return parse_user_grant({"client_id": AZURE_CLI, "scope": ARM, **form}, "v2")


def password_grant(signin: SignIn) -> dict[str, object]:
    request = grant(grant_type="password", username="pat@x.example", password=PASSWORD)
    return signin.token(TENANT, request, "127.0.0.1")


def test_device_code_pending_then_expired(signin: tuple[SignIn, FrozenClock, people.UserRecord]) -> None:
    service, clock, _user = signin
    flow = service.start_device(TENANT, AZURE_CLI, ARM, "https://localhost:1/devicelogin")
    poll = grant(grant_type="urn:ietf:params:oauth:grant-type:device_code", device_code=str(flow["device_code"]))
    with pytest.raises(AuthorizationPending):
        service.token(TENANT, poll, "127.0.0.1")
    clock.advance(DEVICE_LIFETIME + 1)
    with pytest.raises(ExpiredToken) as expired:
        service.token(TENANT, poll, "127.0.0.1")
    assert expired.value.error == "expired_token" and expired.value.aadsts == 70020
    with pytest.raises(Exception, match="expired or is not valid"):
        service.pending_device(str(flow["user_code"]))


def test_authorization_code_expires(signin: tuple[SignIn, FrozenClock, people.UserRecord]) -> None:
    service, clock, user = signin
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    client = service.public_or_registered(TENANT, AZURE_CLI)
    code = service.issue_code(
        user, client, redirect_uri="http://localhost/", scope=ARM, challenge=challenge, nonce=None
    )
    clock.advance(CODE_LIFETIME + 1)
    redeem = grant(grant_type="authorization_code", code=code, redirect_uri="http://localhost/", code_verifier=verifier)
    with pytest.raises(InvalidGrant) as refused:
        service.token(TENANT, redeem, "127.0.0.1")
    assert refused.value.aadsts == 70008


def test_refresh_reuse_inside_grace_is_served_after_it_revokes_the_family(
    signin: tuple[SignIn, FrozenClock, people.UserRecord],
) -> None:
    service, clock, _user = signin
    first = str(password_grant(service)["refresh_token"])
    refresh = grant(grant_type="refresh_token", refresh_token=first)
    second = str(service.token(TENANT, refresh, "127.0.0.1")["refresh_token"])
    # A racing second redemption of the same token, moments later: served.
    again = str(service.token(TENANT, refresh, "127.0.0.1")["refresh_token"])
    assert len({first, second, again}) == 3
    clock.advance(REFRESH_REUSE_GRACE + 1)
    with pytest.raises(InvalidGrant) as reused:
        service.token(TENANT, refresh, "127.0.0.1")
    assert reused.value.aadsts == 50173
    # The reuse revoked every descendant: the newest token stops working too.
    with pytest.raises(InvalidGrant) as revoked:
        service.token(TENANT, grant(grant_type="refresh_token", refresh_token=second), "127.0.0.1")
    assert revoked.value.aadsts == 50173


def test_backoff_refills_and_a_disabled_user_loses_refresh(
    signin: tuple[SignIn, FrozenClock, people.UserRecord],
) -> None:
    service, clock, user = signin
    wrong = grant(grant_type="password", username="PAT@x.example", password="Wrong-Pa55")
    for _ in range(3):
        with pytest.raises(InvalidGrant) as refused:
            service.token(TENANT, wrong, "127.0.0.1")
        assert refused.value.aadsts == 50126
    with pytest.raises(SignInThrottled):
        password_grant(service)
    password_grant_from_elsewhere = grant(grant_type="password", username="pat@x.example", password=PASSWORD)
    assert service.token(TENANT, password_grant_from_elsewhere, "10.0.0.9")["access_token"]
    clock.advance(30.0)
    issued = password_grant(service)
    clock.advance(1)
    with service.directory.store.session() as s:
        people.update_user(s, user.object_id, account_enabled=False, tokens_valid_from=clock.now())
    refresh = grant(grant_type="refresh_token", refresh_token=str(issued["refresh_token"]))
    with pytest.raises(InvalidGrant) as ended:
        service.token(TENANT, refresh, "127.0.0.1")
    assert ended.value.aadsts == 50173


def test_cleanup_keeps_retired_refresh_tokens_so_their_reuse_still_revokes(
    signin: tuple[SignIn, FrozenClock, people.UserRecord],
) -> None:
    service, clock, _user = signin
    first = str(password_grant(service)["refresh_token"])
    refresh = grant(grant_type="refresh_token", refresh_token=first)
    second = str(service.token(TENANT, refresh, "127.0.0.1")["refresh_token"])
    clock.advance(2 * 86400.0)
    service.forget_expired()
    with pytest.raises(InvalidGrant) as reused:
        service.token(TENANT, refresh, "127.0.0.1")
    assert reused.value.aadsts == 50173
    with pytest.raises(InvalidGrant):
        service.token(TENANT, grant(grant_type="refresh_token", refresh_token=second), "127.0.0.1")


def test_a_single_page_apps_refresh_tokens_end_a_day_after_sign_in(
    signin: tuple[SignIn, FrozenClock, people.UserRecord],
) -> None:
    """Entra: a refresh token issued to a SPA has a fixed 24-hour lifetime from the sign-in; using it
    issues new ones with what is left, never more (AADSTS700084 after)."""
    service, clock, user = signin
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    client = service.public_or_registered(TENANT, AZURE_CLI)
    code = service.issue_code(
        user, client, redirect_uri="http://localhost/", scope=ARM, challenge=challenge, nonce=None, redirect_kind=SPA
    )
    origin = "https://spa.example"
    redeem = grant(grant_type="authorization_code", code=code, redirect_uri="http://localhost/", code_verifier=verifier)
    first = service.token(TENANT, dataclasses.replace(redeem, origin=origin), "127.0.0.1")
    assert first["refresh_token_expires_in"] == 86400
    clock.advance(23 * 3600)
    refreshed = service.token(
        TENANT,
        dataclasses.replace(
            grant(grant_type="refresh_token", refresh_token=str(first["refresh_token"])), origin=origin
        ),
        "127.0.0.1",
    )
    assert refreshed["refresh_token_expires_in"] == 3600
    clock.advance(3601)
    late = grant(grant_type="refresh_token", refresh_token=str(refreshed["refresh_token"]))
    with pytest.raises(InvalidGrant) as refused:
        service.token(TENANT, dataclasses.replace(late, origin=origin), "127.0.0.1")
    assert refused.value.aadsts == 700084
