"""Redirect-URI matching (exact, loopback port free only for public clients registered as
http://localhost), what Graph may register, and SSO sessions against an injected clock: idle and
absolute expiry, sign-out, and the user's password change or disable ending them."""

from __future__ import annotations

import pytest

from lanyard.core.clock import FrozenClock
from lanyard.core.errors import GraphError
from lanyard.directory.redirects import PUBLIC_CLIENT, SPA, WEB, RedirectRegistry, check_uri
from lanyard.directory.signin import SignIn
from lanyard.directory.sso import SSO_IDLE, SSO_LIFETIME
from lanyard.storage import people_repo as people
from tests.unit.test_signin_lifetimes import signin  # noqa: F401 - the fixture

REGISTRY = RedirectRegistry(
    web=("https://app.example/cb",),
    public_client=("http://localhost", "http://localhost/native", "myapp://auth"),
    spa=("https://spa.example/",),
)


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("https://app.example/cb", WEB),
        ("https://spa.example/", SPA),
        ("myapp://auth", PUBLIC_CLIENT),
        ("http://localhost:8400", PUBLIC_CLIENT),
        ("http://localhost:8400/", PUBLIC_CLIENT),
        ("http://localhost:1/native", PUBLIC_CLIENT),
        ("https://app.example/cb/", None),
        ("https://app.example/cb?x=1", None),
        ("https://APP.example/cb", None),
        ("https://app.example:444/cb", None),
        ("http://127.0.0.1:8400/", None),
        ("http://localhost:8400/other", None),
        ("http://localhost:8400/#frag", None),
        ("http://user@localhost:8400/", None),
        ("http://localhost:notaport/", None),
        ("", None),
    ],
)
def test_kind_of_matches_exactly_with_the_loopback_exception(uri: str, kind: str | None) -> None:
    assert REGISTRY.kind_of(uri) == kind


def test_loopback_with_a_registered_port_is_exact() -> None:
    registry = RedirectRegistry(public_client=("http://localhost:5000/",))
    assert registry.kind_of("http://localhost:5000/") == PUBLIC_CLIENT
    assert registry.kind_of("http://localhost:5001/") is None


@pytest.mark.parametrize(
    ("kind", "uri"),
    [
        (WEB, "http://app.example/cb"),
        (WEB, "myapp://auth"),
        (SPA, "https://*.example/"),
        (WEB, "https://app.example/cb#x"),
        (PUBLIC_CLIENT, "relative/path"),
        (WEB, "https://" + "a" * 300 + ".example/"),
        (WEB, 42),
    ],
)
def test_graph_refuses_what_entra_would_not_register(kind: str, uri: object) -> None:
    with pytest.raises(GraphError):
        check_uri(kind, uri)


def test_updated_replaces_one_list_and_checks_everything_first() -> None:
    changed = REGISTRY.updated({"web": {"redirectUris": ["https://app.example/new"]}})
    assert changed.web == ("https://app.example/new",) and changed.spa == REGISTRY.spa
    assert RedirectRegistry.loads(changed.dumps()) == changed
    with pytest.raises(GraphError):
        REGISTRY.updated({"web": {"redirectUris": ["https://ok.example/"]}, "spa": {"redirectUris": ["ftp://x/"]}})
    with pytest.raises(GraphError):
        REGISTRY.updated({"web": {"redirectUris": [f"https://a.example/{i}" for i in range(257)]}})


def test_sso_session_idle_and_absolute_expiry(signin: tuple[SignIn, FrozenClock, people.UserRecord]) -> None:  # noqa: F811
    sign_in, clock, user = signin
    cookie = sign_in.sso.start(user)
    clock.advance(SSO_IDLE - 60)
    held = sign_in.sso.user_of(cookie)
    assert held is not None and held.object_id == user.object_id
    clock.advance(SSO_IDLE - 60)  # used recently enough (last seen was touched above)
    assert sign_in.sso.user_of(cookie) is not None
    clock.advance(SSO_IDLE + 1)
    assert sign_in.sso.user_of(cookie) is None
    busy = sign_in.sso.start(user)
    for _ in range(int(SSO_LIFETIME // (SSO_IDLE / 2))):
        clock.advance(SSO_IDLE / 2)
        sign_in.sso.user_of(busy)
    assert sign_in.sso.user_of(busy) is None  # however busy, a week at most


def test_sso_session_ends_on_sign_out_password_change_and_disable(
    signin: tuple[SignIn, FrozenClock, people.UserRecord],  # noqa: F811
) -> None:
    sign_in, clock, user = signin
    cookie = sign_in.sso.start(user)
    assert sign_in.sso.end(cookie) and sign_in.sso.user_of(cookie) is None
    assert not sign_in.sso.end(cookie)  # replayed after sign-out: nothing left to end
    for change in ({"tokens_valid_from": 0.0}, {"account_enabled": False}, {"force_change_password": True}):
        clock.advance(1)
        with sign_in.directory.store.session() as s:
            people.update_user(s, user.object_id, account_enabled=True, force_change_password=False,
                               tokens_valid_from=clock.now())
        cookie = sign_in.sso.start(user)
        assert sign_in.sso.user_of(cookie) is not None
        clock.advance(1)
        with sign_in.directory.store.session() as s:
            people.update_user(s, user.object_id, **{**change, "tokens_valid_from": clock.now()}
                               if "tokens_valid_from" in change else change)
        assert sign_in.sso.user_of(cookie) is None, change
    assert sign_in.sso.user_of("x" * 43) is None and sign_in.sso.user_of("short") is None
