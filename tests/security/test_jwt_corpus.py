"""A JWT attack corpus against every resource server (vault, ARM, Graph, fleet), with tokens signed by
the platform's own signing key: each malformed token gets a 401 in the resource's format, never a
200 and never a 500 (docs/security.md F1)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lanyard.crypto.barrier import Barrier, load_kek
from tests.conftest import RunningPlatform, cli_json

ARM = "https://management.azure.com"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Forger:
    """Signs whatever bytes it is given with the platform's active signing key."""

    def __init__(self, platform: RunningPlatform) -> None:
        url = platform.database or f"sqlite:///{platform.home / 'lanyard.db'}"
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            kid, sealed = conn.execute(
                sa.text("SELECT kid, sealed_private_key FROM signing_keys WHERE state = 'active'")
            ).one()
        engine.dispose()
        pem = Barrier(load_kek(platform.home, None)).open(bytes(sealed), context=f"signing_key:{kid}")
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key, self.kid = key, kid

    def sign(self, header: bytes, payload: bytes) -> str:
        signing_input = f"{b64(header)}.{b64(payload)}".encode()
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{b64(signature)}"

    def token(self, claims: dict[str, Any], **header: Any) -> str:
        head = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "x5t": self.kid, **header}
        return self.sign(json.dumps(head).encode(), json.dumps(claims).encode())


def good_claims(platform: RunningPlatform, audience: str) -> dict[str, Any]:
    admin = platform.endpoints["admin"]
    now = int(time.time())
    return {
        "aud": audience,
        "iss": f"{platform.authority}/{platform.tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "tid": platform.tenant_id,
        "oid": admin["object_id"],
        "sub": admin["object_id"],
        "appid": admin["client_id"],
        "idtyp": "app",
        "ver": "1.0",
    }


def raw_claims(claims: dict[str, Any], name: str, literal: str) -> bytes:
    """The claims as JSON with one member's value replaced by a literal (NaN, Infinity, 1e999)."""
    marker = "__LITERAL__"
    return json.dumps({**claims, name: marker}).replace(f'"{marker}"', literal).encode()


Mutation = Callable[[Forger, dict[str, Any]], str]
CORPUS: dict[str, Mutation] = {
    "exp NaN": lambda f, c: f.sign(
        b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(), raw_claims(c, "exp", "NaN")
    ),
    "exp Infinity": lambda f, c: f.sign(
        b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(), raw_claims(c, "exp", "Infinity")
    ),
    "exp 1e999": lambda f, c: f.sign(
        b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(), raw_claims(c, "exp", "1e999")
    ),
    "nbf -Infinity": lambda f, c: f.sign(
        b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(), raw_claims(c, "nbf", "-Infinity")
    ),
    "exp in ten years": lambda f, c: f.token({**c, "exp": c["iat"] + 10 * 365 * 86400}),
    "exp huge integer": lambda f, c: f.token({**c, "exp": 10**40}),
    "exp as a string": lambda f, c: f.token({**c, "exp": str(c["exp"])}),
    "exp true": lambda f, c: f.token({**c, "exp": True}),
    "iat in the future": lambda f, c: f.token({**c, "iat": c["iat"] + 3600, "nbf": c["iat"] + 3600}),
    "expired": lambda f, c: f.token({**c, "exp": c["iat"] - 600, "nbf": c["iat"] - 4000, "iat": c["iat"] - 4000}),
    "iss as a list": lambda f, c: f.token({**c, "iss": [c["iss"]]}),
    "iss as an object": lambda f, c: f.token({**c, "iss": {"x": c["iss"]}}),
    "aud as a list": lambda f, c: f.token({**c, "aud": [c["aud"]]}),
    "tid of another tenant": lambda f, c: f.token({**c, "tid": OTHER_TENANT}),
    "no tid": lambda f, c: f.token({k: v for k, v in c.items() if k != "tid"}),
    "oid as a number": lambda f, c: f.token({**c, "oid": 7}),
    "typ of a client assertion": lambda f, c: f.token(c, typ="client-authentication+jwt"),
    "typ as a list": lambda f, c: f.token(c, typ=["JWT"]),
    "alg none": lambda f, c: (
        f"{b64(json.dumps({'alg': 'none', 'kid': f.kid}).encode())}.{b64(json.dumps(c).encode())}."
    ),
    "alg HS256": lambda f, c: f.token(c, alg="HS256"),
    "unknown kid": lambda f, c: f.token(c, kid="not-a-key-we-publish"),
    "kid as a number": lambda f, c: f.token(c, kid=5),
    "jku header": lambda f, c: f.token(c, jku="https://attacker.example/keys"),
    "crit header": lambda f, c: f.token(c, crit=["exp"]),
    "duplicate claim": lambda f, c: f.sign(
        b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(),
        json.dumps(c).encode()[:-1] + b', "aud": "https://evil"}',
    ),
    "payload a list": lambda f, c: f.sign(b'{"alg":"RS256","typ":"JWT","kid":"%s"}' % f.kid.encode(), b"[1,2]"),
}


@pytest.fixture(scope="module")
def forger(platform: RunningPlatform) -> Forger:
    return Forger(platform)


@pytest.fixture(scope="module")
def targets(platform: RunningPlatform) -> dict[str, tuple[str, str, str]]:
    """resource server -> (audience, method, url)"""
    cli_json(platform.home, "group", "create", "-n", "corpus-rg", "-l", "westus")
    cli_json(platform.home, "keyvault", "create", "-g", "corpus-rg", "-n", "corpuskv")
    vault = f"https://corpuskv.{platform.endpoints['vault_suffix']}/secrets/x?api-version=7.4"
    graph = platform.endpoints["graph"]
    return {
        "vault": (platform.endpoints["vault_audience"], "GET", vault),
        "arm": (ARM, "GET", f"{platform.authority}/subscriptions?api-version=2022-12-01"),
        "graph": (graph, "GET", f"{graph}/v1.0/applications"),
        "fleet": ("api://lanyard-host-agent", "GET", f"{platform.authority}/lanyard/v1/agent/bindings"),
    }


def test_the_forger_makes_tokens_every_server_accepts(
    platform: RunningPlatform, forger: Forger, targets: dict[str, tuple[str, str, str]]
) -> None:
    """Without this, every refusal below could be for the wrong reason."""
    with platform.http() as http:
        for name, (audience, method, url) in targets.items():
            token = forger.token(good_claims(platform, audience))
            got = http.request(method, url, headers={"Authorization": f"Bearer {token}"})
            # fleet: a valid token, but the admin is not a host (403); the others answer (vault: 404 secret)
            assert got.status_code in {"vault": (404,), "arm": (200,), "graph": (200,), "fleet": (403,)}[name], (
                name,
                got.text,
            )


@pytest.mark.parametrize("attack", sorted(CORPUS))
def test_every_resource_server_refuses_the_attack_with_401(
    platform: RunningPlatform, forger: Forger, targets: dict[str, tuple[str, str, str]], attack: str
) -> None:
    with platform.http() as http:
        for name, (audience, method, url) in targets.items():
            token = CORPUS[attack](forger, good_claims(platform, audience))
            got: httpx.Response = http.request(method, url, headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 401, (attack, name, got.status_code, got.text[:300])
            body = got.json()
            assert isinstance(body.get("error"), dict) and body["error"].get("code"), (attack, name, body)
            if name in ("vault", "arm"):
                assert "authorization_uri" in got.headers.get("www-authenticate", "").lower() or name == "vault"
            if name == "vault":
                assert got.headers.get("www-authenticate", "").startswith("Bearer authorization=")
