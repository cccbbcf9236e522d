"""The host agent's two token protocols as a workload sees them, and the checks on their answers.

App Service: GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R with X-IDENTITY-HEADER.
IMDS: GET $AZURE_POD_IDENTITY_AUTHORITY_HOST/metadata/identity/oauth2/token?api-version=2018-02-01
&resource=R with `Metadata: true` (a request without it is the SDKs' probe and must get 400 at once).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchkit.harness import HttpTarget
from benchkit.rawhttp import get_request, simultaneous
from benchkit.tokens import CheckFailed, json_body, verify_rs256

ARM = "https://management.azure.com"
APP_SERVICE_VERSION = "2019-08-01"
IMDS_VERSION = "2018-02-01"
IMDS_TOKEN_PATH = "/metadata/identity/oauth2/token"
RESPONSE_FIELDS = {"access_token", "expires_on", "expires_in", "resource", "token_type", "client_id", "not_before"}


@dataclass(frozen=True)
class Shape:
    """One way of asking the agent for a token: where, with which fixed query and headers, and whose
    token it must be (the claim that names the identity, and its expected value)."""

    label: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    identity_claim: tuple[str, str]  # ("oid", principalId) or ("appid", clientId)
    extra: dict[str, str] = field(default_factory=dict)  # an identity selector such as client_id

    def query(self, resource: str) -> dict[str, str]:
        return {**self.params, **self.extra, "resource": resource}

    def http_target(self, resource: str = ARM) -> HttpTarget:
        url = str(httpx.URL(self.url, params=self.query(resource)))
        return HttpTarget(url, headers=tuple(self.headers.items()))

    def raw_request(self, resource: str) -> bytes:
        return get_request(self.url, self.query(resource), self.headers)


def app_service_shape(env: dict[str, str], principal_id: str, client_id: str | None = None) -> Shape:
    """The system identity (no selector, judged by oid), or a user-assigned one picked by client_id."""
    headers = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    params = {"api-version": APP_SERVICE_VERSION}
    if client_id is None:
        return Shape("app service", env["IDENTITY_ENDPOINT"], params, headers, ("oid", principal_id))
    return Shape(
        "app service (user-assigned)",
        env["IDENTITY_ENDPOINT"],
        params,
        headers,
        ("appid", client_id),
        {"client_id": client_id},
    )


def imds_shape(env: dict[str, str], principal_id: str) -> Shape:
    base = env["AZURE_POD_IDENTITY_AUTHORITY_HOST"].rstrip("/")
    return Shape(
        "imds", f"{base}{IMDS_TOKEN_PATH}", {"api-version": IMDS_VERSION}, {"Metadata": "true"}, ("oid", principal_id)
    )


def probe_target(imds: Shape) -> HttpTarget:
    """The SDK's availability probe: the IMDS token URL without the Metadata header; 400 expected."""
    return HttpTarget(str(httpx.URL(imds.url, params=imds.query(ARM))), expect_status=400)


def claims_of(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise CheckFailed("access_token is not a JWT") from exc
    if not isinstance(claims, dict):
        raise CheckFailed("access_token claims are not a JSON object")
    return claims


def check_answer(shape: Shape, body: dict[str, Any], resource: str, jwks: dict[str, Any] | None = None) -> str:
    """A token response a client accepts, for this identity and resource; returns the access token.
    With a JWKS, the signature is verified too (done once per shape, not on every racing answer)."""
    what = f"{shape.label} token for {resource}"
    missing = RESPONSE_FIELDS - set(body)
    if missing:
        raise CheckFailed(f"{what}: response lacks {sorted(missing)}")
    token = str(body["access_token"])
    claims = verify_rs256(token, jwks, what) if jwks is not None else claims_of(token)
    name, expected = shape.identity_claim
    if claims.get(name) != expected:
        raise CheckFailed(f"{what}: token {name} is {claims.get(name)!r}, expected {expected!r}")
    if claims.get("aud") != resource or body.get("resource") != resource:
        raise CheckFailed(f"{what}: issued for {claims.get('aud')!r} / {body.get('resource')!r}")
    return token


def fetch(shape: Shape, resource: str = ARM, jwks: dict[str, Any] | None = None) -> str:
    response = httpx.get(shape.url, params=shape.query(resource), headers=shape.headers, timeout=30)
    return check_answer(shape, json_body(response, f"{shape.label} token"), resource, jwks)


# ------------------------------------------------------------------------------------------- G4


@dataclass(frozen=True)
class Exactness:
    """What N simultaneous first requests and R repeats for one fresh (identity, resource) returned."""

    shape: str
    racing: int
    racing_distinct: int  # distinct tokens among the racing answers: 1 means one signature served all
    repeats: int
    repeats_new: int  # repeats answered with a token the racing requests did not get: a re-sign on a hit
    distinct: int  # distinct tokens over all answers
    failed: int  # answers that were not a valid token for this identity and resource

    @property
    def extra_signatures(self) -> int:
        return max(self.distinct - 1, 0)

    def describe(self) -> str:
        return (
            f"{self.shape}: {self.racing} simultaneous first requests -> {self.racing_distinct} distinct token(s); "
            f"{self.repeats} repeats -> {self.repeats_new} with a new token; {self.failed} failed"
        )


def exactness(shape: Shape, resource: str, racing: int, repeats: int) -> Exactness:
    """Race `racing` first requests for a resource nobody asked for yet, then send `repeats` more, also
    at once, so a hit path that signed (or a miss that was not coalesced) shows as another token."""
    first = asyncio.run(simultaneous(shape.url, [shape.raw_request(resource)] * racing, 60))
    again = asyncio.run(simultaneous(shape.url, [shape.raw_request(resource)] * repeats, 60))
    first_tokens = [_valid_token(shape, status, body, resource) for status, body in first]
    again_tokens = [_valid_token(shape, status, body, resource) for status, body in again]
    racing_set = {t for t in first_tokens if t}
    every = racing_set | {t for t in again_tokens if t}
    return Exactness(
        shape.label,
        racing,
        len(racing_set),
        repeats,
        sum(1 for t in again_tokens if t and t not in racing_set),
        len(every),
        sum(1 for t in first_tokens + again_tokens if t is None),
    )


def _valid_token(shape: Shape, status: int, body: bytes, resource: str) -> str | None:
    if status != 200:
        return None
    try:
        return check_answer(shape, json.loads(body), resource)
    except (CheckFailed, ValueError, TypeError):
        return None
