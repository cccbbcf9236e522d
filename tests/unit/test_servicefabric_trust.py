"""A Service Fabric run's node trust file: the platform CA plus the endpoint's own self-signed certificate,
so a client that validates TLS as usual (msal-node pins no thumbprint) completes a real handshake with it."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from lanyard.agent.servicefabric import make_certificate
from lanyard.crypto.pki import CertificateAuthority, cert_pem


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """One TLS handshake over loopback, verifying 127.0.0.1 (the endpoint's URL host)."""
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b".")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_the_trust_file_holds_the_ca_and_the_endpoint_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(dt.datetime.now(dt.UTC))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cert_pem(ca.cert))
    fabric = make_certificate(tmp_path, time.time())
    trust = fabric.node_trust(str(ca_file))
    assert trust.stat().st_mode & 0o777 == 0o600
    certs = x509.load_pem_x509_certificates(trust.read_bytes())
    assert [c.subject for c in certs] == [
        ca.cert.subject,
        x509.load_pem_x509_certificate(fabric.cert_file.read_bytes()).subject,
    ]
    handshake(fabric.server_context(), ssl.create_default_context(cafile=str(trust)))


def test_without_it_the_endpoint_is_not_trusted(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(dt.datetime.now(dt.UTC))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cert_pem(ca.cert))
    fabric = make_certificate(tmp_path, time.time())
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self.signed"):
        handshake(fabric.server_context(), ssl.create_default_context(cafile=str(ca_file)))
