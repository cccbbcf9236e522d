"""The platform's workload issuer: what AKS's OIDC issuer is to a cluster (docs/federation.md).

An AKS-style run gets a projected service-account token in a file, signed by this issuer; the
workload presents it as a federated client assertion. Its discovery document and key set are
served at `{base}/lanyard/v1/workload-issuer/{tenant}` like any OIDC issuer's, so an outside
verifier can check its tokens too; the directory itself verifies them with its own key ring (the
same published signing keys: the issuer and audience keep the two kinds of token apart, as an
access token's issuer is never this one and its audience never api://AzureADTokenExchange).
"""

from __future__ import annotations

import uuid
from typing import Any

from lanyard.protocol.federation import DEFAULT_AUDIENCE

JWKS_PATH = "/openid/v1/jwks"


def service_account_subject(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def discovery_document(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def projected_claims(
    issuer: str, namespace: str, name: str, workload_id: str, now: float, lifetime: int
) -> dict[str, Any]:
    """The claims of a Kubernetes projected service-account token, as AKS's issuer writes them."""
    iat = int(now)
    return {
        "aud": [DEFAULT_AUDIENCE],
        "exp": iat + lifetime,
        "iat": iat,
        "nbf": iat,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "sub": service_account_subject(namespace, name),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, workload_id.lower()))},
        },
    }
