"""An outside OIDC issuer for the federation tests: a real HTTPS server on loopback with its own CA,
serving a discovery document and a JWKS, signing CI-shaped tokens with its own RSA key, and
recording every request it receives (the tests assert what was, and was not, fetched)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.crypto.pki import CertificateAuthority, cert_pem, private_key_pem

AUDIENCE = "api://AzureADTokenExchange"


def make_ca(folder: Path) -> tuple[CertificateAuthority, Path]:
    ca = CertificateAuthority.create(dt.datetime.now(dt.UTC), "Federation Test CA")
    path = folder / "issuer-ca.pem"
    path.write_bytes(cert_pem(ca.cert))
    return ca, path


@dataclass
class Issuer:
    """Modes: "normal"; "oversized" (a JWKS far above the platform's limit); "unreachable" (its
    jwks_uri names a port nothing listens on)."""

    ca: CertificateAuthority
    folder: Path
    mode: str = "normal"
    host: str = "localhost"
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    requests: list[str] = field(default_factory=list)
    dead_port: int = 0

    def start(self) -> Issuer:
        key, cert = self.ca.issue_server(dt.datetime.now(dt.UTC), ["localhost"], ["127.0.0.1"])
        name = uuid.uuid4().hex[:8]
        (self.folder / f"{name}.key").write_bytes(private_key_pem(key))
        (self.folder / f"{name}.crt").write_bytes(cert_pem(cert))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps(issuer.discovery()).encode()
                elif self.path == "/keys":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def discovery(self) -> dict[str, Any]:
        jwks_port = self.dead_port if self.mode == "unreachable" else self.port
        return {
            "issuer": self.url,
            "jwks_uri": f"https://{self.host}:{jwks_port}/keys",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> bytes:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        keys = [jwk]
        if self.mode == "oversized":
            # Plenty of well-formed keys: the size alone must make the platform refuse it.
            keys += [{**jwk, "kid": f"filler-{i}"} for i in range(2000)]
        return json.dumps({"keys": keys}).encode()

    def token(
        self, subject: str, *, audience: str = AUDIENCE, lifetime: int = 300, start: float | None = None, **claims: Any
    ) -> str:
        now = int(start if start is not None else time.time())
        payload = {
            "iss": self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})
