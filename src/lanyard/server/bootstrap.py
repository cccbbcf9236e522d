"""First start and every start: the home folder, the store, the platform's identities and keys.

First start creates a tenant, a subscription, the admin application with a client secret, the
local CA, and a signing key. Later starts load them; nothing is regenerated that a client could
have pinned or cached (tenant, CA, signing keys).

Several nodes may start at once on one empty database: migrations and first start run under the
database's start-up lock (storage/startup.py), so they make one tenant, one CA and one active key.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import OperationalError

from lanyard.config import Settings
from lanyard.core.clock import Clock
from lanyard.core.errors import ConfigError, CryptoError, StoreUnavailable
from lanyard.core.files import write_atomically
from lanyard.crypto.barrier import Barrier, legacy_derive_root, load_kek, load_other_keks
from lanyard.crypto.pki import CertificateAuthority, cert_pem, load_private_key, private_key_pem
from lanyard.directory.keys import SigningKeys, ensure_signing_key
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store, make_engine, migrate, parsed_name
from lanyard.storage.startup import startup_lock

ADMIN_APP_NAME = "lanyard-admin"
SERVER_CERT_RENEW_DAYS = 30


@dataclass(frozen=True)
class PlatformIdentity:
    tenant_id: str
    subscription_id: str
    admin_app_id: str
    admin_object_id: str
    admin_secret: str


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_bundle: Path
    server_cert: Path
    server_key: Path
    server_key_password: str


@dataclass
class Platform:
    settings: Settings
    store: Store
    barrier: Barrier
    keys: SigningKeys
    identity: PlatformIdentity
    ca: CertificateAuthority
    tls: TlsFiles


def prepare_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / "tls").mkdir(exist_ok=True, mode=0o700)


def _first_start(s: repo.Session, barrier: Barrier, clock: Clock) -> None:
    from lanyard.directory.service import add_password_credential, new_client_secret

    now = clock.now()
    tenant_id, sub_id = str(uuid.uuid4()), str(uuid.uuid4())
    repo.add_tenant(s, tenant_id, "Lanyard", now)
    repo.add_subscription(s, sub_id, tenant_id, "Lanyard subscription", now)
    app = repo.add_application(s, str(uuid.uuid4()), str(uuid.uuid4()), tenant_id, ADMIN_APP_NAME, now)
    sp = repo.add_principal(
        s,
        object_id=str(uuid.uuid4()),
        app_id=app.app_id,
        tenant_id=tenant_id,
        display_name=ADMIN_APP_NAME,
        kind="Application",
        resource_id=None,
        now=now,
    )
    secret = new_client_secret()
    add_password_credential(s, barrier, app.app_id, "lanyard up", secret, now, now + 10 * 365 * 86400)
    ca = CertificateAuthority.create(dt.datetime.fromtimestamp(now, dt.UTC))
    for name, value in (
        ("tenant_id", tenant_id),
        ("subscription_id", sub_id),
        ("admin_app_id", app.app_id),
        ("admin_object_id", sp.object_id),
    ):
        repo.put_state(s, name, value=value)
    repo.put_state(s, "admin_secret", sealed=barrier.seal(secret.encode(), context="state:admin_secret"))
    repo.put_state(
        s, "ca", value=cert_pem(ca.cert).decode(), sealed=barrier.seal(private_key_pem(ca.key), context="state:ca")
    )


def _load_identity(s: repo.Session, barrier: Barrier) -> tuple[PlatformIdentity, CertificateAuthority]:
    def value(name: str) -> str:
        got = repo.get_state(s, name)
        if got is None or got[0] is None:
            raise ConfigError(f"the database is missing platform state {name!r}")
        return got[0]

    secret_row = repo.get_state(s, "admin_secret")
    ca_row = repo.get_state(s, "ca")
    if not secret_row or not secret_row[1] or not ca_row or not ca_row[0] or not ca_row[1]:
        raise ConfigError("the database is missing the admin secret or the CA")
    identity = PlatformIdentity(
        tenant_id=value("tenant_id"),
        subscription_id=value("subscription_id"),
        admin_app_id=value("admin_app_id"),
        admin_object_id=value("admin_object_id"),
        admin_secret=barrier.open(secret_row[1], context="state:admin_secret").decode(),
    )
    ca_key = load_private_key(barrier.open(ca_row[1], context="state:ca"))
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the platform CA key is not an EC key")
    return identity, CertificateAuthority(ca_key, x509.load_pem_x509_certificate(ca_row[0].encode()))


def server_names(settings: Settings) -> tuple[list[str], list[str]]:
    zone = settings.dns_zone
    names = ["localhost", zone, f"*.{zone}", f"vault.{zone}", f"*.vault.{zone}"]
    ips = ["127.0.0.1", "::1"]
    extra = settings.advertised_host()
    try:
        import ipaddress

        ipaddress.ip_address(extra)
        if extra not in ips:
            ips.append(extra)
    except ValueError:
        if extra not in names:
            names.append(extra)
    return names, ips


def _server_cert_current(path: Path, ca: CertificateAuthority, names: list[str], ips: list[str], now: float) -> bool:
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have_names = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc.timestamp() - now > SERVER_CERT_RENEW_DAYS * 86400
    return cert.issuer == ca.cert.subject and fresh and set(names) <= have_names and set(ips) <= have_ips


def ensure_tls(settings: Settings, ca: CertificateAuthority, barrier: Barrier, clock: Clock) -> TlsFiles:
    tls_dir = settings.home / "tls"
    files = TlsFiles(
        ca_cert=tls_dir / "ca.pem",
        ca_bundle=tls_dir / "ca-bundle.pem",
        server_cert=tls_dir / "server.pem",
        server_key=tls_dir / "server-key.pem",
        # The key file is encrypted at rest; its password derives from the KEK and is never stored.
        server_key_password=barrier.derive("tls-server-key").hex(),
    )
    ca_pem = cert_pem(ca.cert)
    write_atomically(files.ca_cert, ca_pem)
    public_roots = Path(certifi.where()).read_bytes()
    write_atomically(files.ca_bundle, public_roots.rstrip(b"\n") + b"\n" + ca_pem)
    names, ips = server_names(settings)
    now = clock.now()
    if not _server_cert_current(files.server_cert, ca, names, ips, now) or not files.server_key.exists():
        key, cert = ca.issue_server(dt.datetime.fromtimestamp(now, dt.UTC), names, ips)
        write_atomically(files.server_key, private_key_pem(key, files.server_key_password.encode()))
        write_atomically(files.server_cert, cert_pem(cert) + ca_pem)
    return files


WRONG_KEK = (
    "this node's key-encryption key does not open the platform's sealed keys in {db}: every node of "
    "one platform must use the same KEK (set LANYARD_KEK to the one the database was created with, or, "
    "after `lanyard kek rotate`, to the new one)"
)


def _derive_root(s: repo.Session, barrier: Barrier) -> bytes:
    """The derivation root (secret-hash pepper, TLS key password), kept sealed in the database so
    that it survives a KEK rotation. A store from before it was kept gets the root its hashes were
    made with: the one derived from the KEK that sealed its CA."""
    row = repo.get_state(s, "derive_root")
    if row is not None and row[1]:
        return barrier.open(row[1], context="state:derive_root")
    ca = repo.get_state(s, "ca")
    if ca is not None and ca[1]:
        key = barrier.key_for(Barrier.kek_id_of(ca[1]))
        if key is None:
            raise CryptoError("the CA is sealed under a key-encryption key this node does not have")
        root = legacy_derive_root(key)
    else:
        root = os.urandom(32)
    repo.put_state(s, "derive_root", sealed=barrier.seal(root, context="state:derive_root"))
    return root


def bootstrap(settings: Settings, clock: Clock, progress: Callable[[str], None] | None = None) -> Platform:
    """`progress` hears what a first start is doing (it takes a few seconds: keys, CA, migrations)."""
    say = progress or (lambda _message: None)
    prepare_home(settings.home)
    barrier = Barrier(
        load_kek(settings.home, settings.kek_b64), *load_other_keks(settings.home, settings.previous_keks_b64)
    )
    store = Store(make_engine(settings.database), clock.now)
    try:
        with startup_lock(store.engine, settings.database):
            migrate(store.engine)
            with store.session() as s:
                barrier.use_derive_root(_derive_root(s, barrier))
            with store.session() as s:
                if repo.get_state(s, "tenant_id") is None:
                    # Said only now: a node that cannot open the database must fail in one line.
                    say(f"a new platform in the database {parsed_name(settings.database)}")
                    say("creating the tenant, its subscription, the admin application and the certificate authority")
                    _first_start(s, barrier, clock)
            with store.session() as s:
                identity, ca = _load_identity(s, barrier)
            ensure_signing_key(store, barrier, clock)
            keys = SigningKeys(store, barrier)
            _ensure_identity_credentials(store, barrier, keys, clock)
    except CryptoError as exc:
        store.close()
        raise ConfigError(WRONG_KEK.format(db=parsed_name(settings.database))) from exc
    except (StoreUnavailable, OperationalError) as exc:
        store.close()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise ConfigError(f"cannot reach the database {parsed_name(settings.database)}: {reason}") from exc
    say("issuing this server's TLS certificate")
    tls = ensure_tls(settings, ca, barrier, clock)
    return Platform(settings, store, barrier, keys, identity, ca, tls)


def _ensure_identity_credentials(store: Store, barrier: Barrier, keys: SigningKeys, clock: Clock) -> None:
    """Identities made before credentials were created on the write path get theirs now."""
    from lanyard.directory.service import Directory, DirectoryConfig

    directory = Directory(store, barrier, keys, clock, DirectoryConfig(authority="", known_bases=()))
    with store.session() as s:
        directory.ensure_identity_credentials(s)
