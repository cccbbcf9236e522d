"""Federated identity credential rules: subject patterns, the claims-matching expression language,
what a credential may be created with, and the token endpoint's order of refusals."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.config import load_federation_settings
from lanyard.core.errors import ConfigError, InvalidClient
from lanyard.directory.federated import verify_federated
from lanyard.protocol.claims_expression import parse_expression
from lanyard.protocol.federation import RuleError, check_spec, compile_rule, matches
from lanyard.protocol.jose import parse_compact

ISSUER = "https://token.actions.example"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("repo:org/*:ref:refs/heads/main", "repo:org/app:ref:refs/heads/main", True),
        ("repo:org/*:ref:refs/heads/main", "repo:org/:ref:refs/heads/main", True),
        ("repo:org/*:ref:refs/heads/main", "repo:org/a:b:ref:refs/heads/main", False),
        ("repo:org/*:ref:refs/heads/main", "repo:org/app:ref:refs/heads/main2", False),
        ("repo:org/**", "repo:org/app:environment:prod", True),
        ("repo:org/**", "repo:other/app", False),
        ("repo:org/app", "repo:org/app", True),
        ("repo:org/app", "Repo:org/app", False),  # case-sensitive, as Entra
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy", False),
        ("repo:o.g/*", "repo:oxg/app", False),  # every other character is itself, dots included
    ],
)
def test_subject_patterns(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_a_pattern_with_many_wildcards_stays_linear() -> None:
    # A backtracking regex takes exponential time on this; the automaton reads the value once.
    assert matches("a" + "*a" * 60 + "b", "a" * 50_000) is False


@pytest.mark.parametrize("pattern", ["*", "**", "*:ref:refs/heads/main", "repo:***", "repo: x*"])
def test_patterns_that_would_trust_too_much_or_are_malformed_are_refused(pattern: str) -> None:
    with pytest.raises(RuleError):
        check_spec(ISSUER, pattern, None)


def test_expressions_evaluate_over_claims() -> None:
    node = parse_expression(
        "claims['sub'] matches 'repo:org/**' and not (claims['ref'] eq 'refs/heads/dev' or claims['env'] ne 'prod')"
    )
    assert node.evaluate({"sub": "repo:org/app", "ref": "refs/heads/main", "env": "prod"})
    assert not node.evaluate({"sub": "repo:org/app", "ref": "refs/heads/dev", "env": "prod"})
    assert not node.evaluate({"sub": "repo:org/app", "ref": "refs/heads/main", "env": "staging"})
    # Absent or non-string claims equal and match nothing.
    assert not parse_expression("claims['env'] eq 'prod'").evaluate({"env": ["prod"]})
    assert parse_expression("claims['env'] ne 'prod'").evaluate({})
    assert parse_expression("claims['x'] eq 'it''s'").evaluate({"x": "it's"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "1 to"),
        ("claims['sub']", "ends too early"),
        ("claims['sub'] like 'x'", "expected eq, ne or matches"),
        ("claims['sub'] eq claims['aud']", "quoted string"),
        ("(claims['sub'] eq 'x'", "ends too early"),
        ("claims['sub'] eq 'x' claims['a'] eq 'b'", "unexpected"),
        ("claims['sub'] matches '*'", "leading wildcard"),
        ("len(claims['sub']) eq '3'", "expected claims['name']"),
        ("not " * 40 + "claims['a'] eq 'b'", "deeper"),
    ],
)
def test_malformed_expressions_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_expression(text)
    assert says in str(caught.value)


def test_credential_specs() -> None:
    spec = check_spec(ISSUER, "repo:org/app:ref:refs/heads/main", None)
    assert spec.audiences == ("api://AzureADTokenExchange",)
    flexible = check_spec(ISSUER, None, ["api://x"], "claims['sub'] eq 'a'", 1)
    assert flexible.subject is None and flexible.language_version == 1
    for bad in (
        lambda: check_spec("http://insecure.example", "s", None),
        lambda: check_spec("https://x.example/?q=1", "s", None),
        lambda: check_spec(ISSUER, None, None),
        lambda: check_spec(ISSUER, "s", ["x"] * 11),
        lambda: check_spec(ISSUER, "s", None, "claims['sub'] eq 'a'"),
        lambda: check_spec(ISSUER, None, None, "claims['sub'] eq 'a'", 2),
    ):
        with pytest.raises(RuleError):
            bad()


class Signer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(65537, 2048)
        self.fetched: list[tuple[str, str | None]] = []

    def token(self, **claims: Any) -> Any:
        payload = {"iss": ISSUER, "sub": "repo:org/app", "aud": "api://AzureADTokenExchange", "exp": 2000, "iat": 1000}
        payload.update(claims)
        return parse_compact(jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "k1"}))

    def key_for(self, issuer: str, kid: str | None) -> rsa.RSAPublicKey:
        self.fetched.append((issuer, kid))
        return self.key.public_key()


def code_of(signer: Signer, rules: list[Any], **claims: Any) -> int:
    with pytest.raises(InvalidClient) as caught:
        verify_federated(signer.token(**claims), rules, now=1500, skew=300, key_for=signer.key_for)
    return caught.value.aadsts


def test_the_order_of_refusals_fetches_keys_only_for_a_token_that_could_pass() -> None:
    signer = Signer()
    rules = [compile_rule("r", ISSUER, ("api://AzureADTokenExchange",), "repo:org/*", None)]
    assert code_of(signer, rules, iss="https://elsewhere.example") == 700211
    assert code_of(signer, rules, aud="api://other") == 700212
    assert code_of(signer, rules, sub="repo:evil/app") == 700213
    assert code_of(signer, rules, exp=1000) == 700024
    assert code_of(signer, rules, nbf=2000) == 700024
    assert signer.fetched == []
    matched = verify_federated(signer.token(), rules, now=1500, skew=300, key_for=signer.key_for)
    assert matched.name == "r" and signer.fetched == [(ISSUER, "k1")]


def test_a_key_carried_in_the_token_is_never_used() -> None:
    signer = Signer()
    rules = [compile_rule("r", ISSUER, ("api://AzureADTokenExchange",), "repo:org/app", None)]
    jws = signer.token()
    forged = type(jws)(
        {**jws.header, "jku": "https://attacker.example/keys"}, jws.claims, jws.signing_input, jws.signature
    )
    with pytest.raises(InvalidClient) as caught:
        verify_federated(forged, rules, now=1500, skew=300, key_for=signer.key_for)
    assert caught.value.aadsts == 50027


def test_allowed_issuer_hosts() -> None:
    settings = load_federation_settings(
        {
            "LANYARD_FEDERATION_ALLOWED_ISSUERS": "token.actions.githubusercontent.com, *.oic.prod-aks.azure.com,localhost:8443"
        }
    )
    assert settings.allows_host("token.actions.githubusercontent.com", 443)
    assert settings.allows_host("eastus.oic.prod-aks.azure.com", 443)
    assert not settings.allows_host("oic.prod-aks.azure.com", 443)
    assert not settings.allows_host("evil-oic.prod-aks.azure.com.attacker.example", 443)
    assert settings.allows_host("localhost", 8443) and not settings.allows_host("localhost", 8444)
    assert not load_federation_settings({}).allows_host("localhost", 443)  # nothing unless named
    for bad in ("*", "https://x.example", "a/b", "*.", "x.*.example"):
        with pytest.raises(ConfigError):
            load_federation_settings({"LANYARD_FEDERATION_ALLOWED_ISSUERS": bad})
    with pytest.raises(ConfigError):
        load_federation_settings({"LANYARD_WORKLOAD_TOKEN_LIFETIME": "5"})
