"""Fetching an outside issuer's keys: a real HTTPS issuer on loopback, the platform's fetcher with a
frozen clock. Cached until expiry; an unknown key id refetches once per cooldown; a failure is
remembered for as long; only allowed hosts, and internal addresses only when allowed."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanyard.config import FederationSettings
from lanyard.core.clock import FrozenClock
from lanyard.core.errors import InvalidClient
from lanyard.directory.oidc import IssuerKeys, IssuerUnavailable
from tests.support.oidc_issuer import Issuer, make_ca


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    folder = Path(tempfile.mkdtemp(prefix="lanyard-keys-"))
    ca, _ = make_ca(folder)
    started = Issuer(ca, folder).start()
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


def fetcher(issuer: Issuer, clock: FrozenClock, **overrides: object) -> IssuerKeys:
    settings = {
        "allowed_issuers": ("localhost",),
        "allow_private": True,
        "ca_bundle": issuer.folder / "issuer-ca.pem",
        "fetch_timeout": 3.0,
        **overrides,
    }
    return IssuerKeys(FederationSettings(**settings), clock)  # type: ignore[arg-type]


def test_keys_are_cached_until_they_expire(issuer: Issuer) -> None:
    clock = FrozenClock()
    keys = fetcher(issuer, clock)
    first = keys.key(issuer.url, issuer.kid)
    assert first.public_numbers() == issuer.key.public_key().public_numbers()
    keys.key(issuer.url, issuer.kid)
    keys.key(issuer.url, None)  # the only key, when the token names none
    assert issuer.requests == ["/.well-known/openid-configuration", "/keys"]
    clock.advance(keys.settings.cache_seconds + 1)
    keys.key(issuer.url, issuer.kid)
    assert issuer.requests.count("/keys") == 2


def test_an_unknown_key_id_refetches_once_per_cooldown(issuer: Issuer) -> None:
    clock = FrozenClock()
    keys = fetcher(issuer, clock)
    keys.key(issuer.url, issuer.kid)
    old_kid, issuer.kid = issuer.kid, uuid.uuid4().hex[:16]  # the issuer rolled its key
    with pytest.raises(InvalidClient) as caught:
        keys.key(issuer.url, issuer.kid)  # within the cooldown of the first fetch: no new fetch
    assert caught.value.aadsts == 700027
    assert issuer.requests.count("/keys") == 1
    clock.advance(keys.settings.refetch_cooldown + 1)
    keys.key(issuer.url, issuer.kid)
    assert issuer.requests.count("/keys") == 2
    with pytest.raises(InvalidClient):
        keys.key(issuer.url, old_kid)


def test_a_failure_is_remembered_for_the_cooldown(issuer: Issuer) -> None:
    clock = FrozenClock()
    issuer.mode = "oversized"
    keys = fetcher(issuer, clock)
    for _ in range(3):
        with pytest.raises(IssuerUnavailable) as caught:
            keys.key(issuer.url, issuer.kid)
        assert "larger than" in caught.value.message
    assert issuer.requests.count("/keys") == 1
    issuer.mode = "normal"
    clock.advance(keys.settings.refetch_cooldown + 1)
    keys.key(issuer.url, issuer.kid)


def test_only_allowed_hosts_and_internal_addresses_only_when_allowed(issuer: Issuer) -> None:
    clock = FrozenClock()
    for keys, says in (
        (fetcher(issuer, clock, allowed_issuers=("example.org",)), "has not allowed"),
        (fetcher(issuer, clock, allowed_issuers=()), "has not allowed"),
        (fetcher(issuer, clock, allow_private=False), "internal address"),
    ):
        with pytest.raises(IssuerUnavailable) as caught:
            keys.key(issuer.url, issuer.kid)
        assert says in caught.value.message
    assert issuer.requests == []


def test_an_issuer_not_signed_by_a_trusted_ca_is_refused(issuer: Issuer) -> None:
    keys = fetcher(issuer, FrozenClock(), ca_bundle=None)
    with pytest.raises(IssuerUnavailable) as caught:
        keys.key(issuer.url, issuer.kid)
    assert "could not be reached" in caught.value.message


def test_a_discovery_document_naming_another_issuer_is_refused(issuer: Issuer) -> None:
    keys = fetcher(issuer, FrozenClock())
    impostor = issuer.url + "/"  # what the document says is not this
    with pytest.raises(IssuerUnavailable) as caught:
        keys.key(impostor, issuer.kid)
    assert "different issuer" in caught.value.message
