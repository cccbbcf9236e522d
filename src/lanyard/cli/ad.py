"""`lanyard ad ...`: applications and service principals, with az's names, flags and JSON shapes."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result
from lanyard.crypto.pki import cert_pem, new_rsa_key, private_key_pem, self_signed

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _profile(ctx: click.Context) -> Profile:
    obj = ctx.find_root().obj
    assert isinstance(obj, dict)
    return Profile.load(obj["home"])


def find_application(profile: Profile, ident: str) -> dict[str, Any]:
    """`--id` takes an application's object id or its app (client) id, as az does."""
    if _GUID.match(ident):
        found = profile.graph("GET", f"/applications?$filter=appId eq '{ident.lower()}'")["value"]
        if found:
            return dict(found[0])
        return dict(profile.graph("GET", f"/applications/{ident.lower()}"))
    fail(f"'{ident}' is not an application object id or app id")


def find_principal(profile: Profile, ident: str) -> dict[str, Any]:
    """`--id` takes an object id, an app (client) id, or a service principal name."""
    if _GUID.match(ident):
        found = profile.graph("GET", f"/servicePrincipals?$filter=appId eq '{ident.lower()}'")["value"]
        if found:
            return dict(found[0])
        return dict(profile.graph("GET", f"/servicePrincipals/{ident.lower()}"))
    found = profile.graph("GET", f"/servicePrincipals?$filter=servicePrincipalNames/any(c:c eq '{_quote(ident)}')")
    if not found["value"]:
        fail(f"Service principal '{ident}' doesn't exist")
    return dict(found["value"][0])


def _cert_material(create_cert: bool, cert: str | None, name: str, home: Path) -> tuple[bytes | None, str | None]:
    """A certificate to register: generated here (the private key never leaves this machine) or given."""
    if create_cert:
        key = new_rsa_key(2048)
        certificate = self_signed(key, name, dt.datetime.now(dt.UTC), days=365)
        folder = home / "certs"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{certificate.serial_number:x}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_key_pem(key) + cert_pem(certificate))
        return certificate.public_bytes(serialization.Encoding.DER), str(path)
    if cert:
        raw = Path(cert[1:] if cert.startswith("@") else cert).read_bytes()
        try:
            loaded = x509.load_pem_x509_certificate(raw)
        except ValueError:
            try:
                loaded = x509.load_der_x509_certificate(raw)
            except ValueError:
                fail(f"{cert} holds no PEM or DER certificate")
        return loaded.public_bytes(serialization.Encoding.DER), None
    return None, None


def _add_certificate(profile: Profile, app: dict[str, Any], der: bytes, append: bool) -> None:
    keep = [{"keyId": k["keyId"]} for k in app.get("keyCredentials", [])] if append else []
    keep.append({"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.b64encode(der).decode()})
    profile.graph("PATCH", f"/applications/{app['id']}", {"keyCredentials": keep})


def _end_date(years: int) -> str:
    if years < 1:
        fail("--years must be at least 1")
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * years)).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("ad")
def ad() -> None:
    """Manage applications and service principals in the directory."""


@ad.group("app")
def app_group() -> None:
    """Manage applications."""


class _SpaceSeparated(click.Option):
    """az's list flags take every value up to the next option (`--web-redirect-uris A B`). Click has
    no such arity, so the parser's handler for this option also takes the words that follow it;
    they arrive joined by spaces (what the quoted spelling "A B" gives too)."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            handler = getattr(parser, "_long_opt", {}).get(name)
            if handler is None:
                continue  # another click parser: the quoted or repeated spelling still works
            store = handler.process

            def process(value: Any, state: Any, store: Any = store) -> None:
                words = [value]
                while state.rargs and not str(state.rargs[0]).startswith("-"):
                    words.append(state.rargs.pop(0))
                store(" ".join(words), state)

            handler.process = process


def _sign_in_options(command: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--web-redirect-uris",
                "web",
                cls=_SpaceSeparated,
                multiple=True,
                help="URIs, space-separated as az takes them.",
            ),
            click.option(
                "--public-client-redirect-uris",
                "public_client",
                cls=_SpaceSeparated,
                multiple=True,
                help="URIs, space-separated as az takes them.",
            ),
            click.option("--is-fallback-public-client", "fallback", type=click.BOOL, default=None),
        )
    ):
        command = option(command)
    return command


def _sign_in_body(web: tuple[str, ...], public_client: tuple[str, ...], fallback: bool | None) -> dict[str, Any]:
    """az's flags as Graph's properties; a flag given with an empty string clears its list."""
    body: dict[str, Any] = {}
    for key, values in (("web", web), ("publicClient", public_client)):
        if values:
            body[key] = {"redirectUris": [u for value in values for u in value.split()]}
    if fallback is not None:
        body["isFallbackPublicClient"] = fallback
    return body


@app_group.command("create")
@click.option("--display-name", required=True)
@_sign_in_options
@click.pass_context
def app_create(
    ctx: click.Context, display_name: str, web: tuple[str, ...], public_client: tuple[str, ...], fallback: bool | None
) -> None:
    body = {"displayName": display_name, **_sign_in_body(web, public_client, fallback)}
    print_result(_profile(ctx).graph("POST", "/applications", body))


@app_group.command("update")
@click.option("--id", "ident", required=True)
@_sign_in_options
@click.pass_context
def app_update(
    ctx: click.Context, ident: str, web: tuple[str, ...], public_client: tuple[str, ...], fallback: bool | None
) -> None:
    """Change an application's redirect URIs or isFallbackPublicClient (az prints nothing)."""
    body = _sign_in_body(web, public_client, fallback)
    if not body:
        fail(
            "nothing to update: give --web-redirect-uris, --public-client-redirect-uris or "
            "--is-fallback-public-client"
        )
    profile = _profile(ctx)
    app = find_application(profile, ident)
    profile.graph("PATCH", f"/applications/{app['id']}", body)


@app_group.command("list")
@click.option("--display-name")
@click.option("--app-id")
@click.pass_context
def app_list(ctx: click.Context, display_name: str | None, app_id: str | None) -> None:
    query = ""
    if display_name:
        query = f"?$filter=displayName eq '{_quote(display_name)}'"
    elif app_id:
        query = f"?$filter=appId eq '{_quote(app_id)}'"
    print_result(_profile(ctx).graph("GET", f"/applications{query}")["value"])


@app_group.command("show")
@click.option("--id", "ident", required=True)
@click.pass_context
def app_show(ctx: click.Context, ident: str) -> None:
    print_result(find_application(_profile(ctx), ident))


@app_group.command("delete")
@click.option("--id", "ident", required=True)
@click.pass_context
def app_delete(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    app = find_application(profile, ident)
    profile.graph("DELETE", f"/applications/{app['id']}")


@app_group.group("credential")
def credential_group() -> None:
    """Manage an application's secrets and certificates."""


@credential_group.command("reset")
@click.option("--id", "ident", required=True)
@click.option("--append", is_flag=True, help="Keep existing credentials.")
@click.option("--display-name")
@click.option("--years", type=int, default=1, show_default=True)
@click.option("--create-cert", is_flag=True)
@click.option("--cert", help="A certificate to register: a path or @path, PEM or DER.")
@click.pass_context
def credential_reset(
    ctx: click.Context,
    ident: str,
    append: bool,
    display_name: str | None,
    years: int,
    create_cert: bool,
    cert: str | None,
) -> None:
    profile = _profile(ctx)
    app = find_application(profile, ident)
    result: dict[str, Any] = {"appId": app["appId"], "tenant": profile.tenant_id}
    der, cert_file = _cert_material(create_cert, cert, app["displayName"], profile.home)
    if der is not None:
        _add_certificate(profile, app, der, append)
        if cert_file:
            result["fileWithCertAndPrivateKey"] = cert_file
        result["password"] = None
    else:
        if not append:
            for old in app.get("passwordCredentials", []):
                profile.graph("POST", f"/applications/{app['id']}/removePassword", {"keyId": old["keyId"]})
        created = profile.graph(
            "POST",
            f"/applications/{app['id']}/addPassword",
            {"passwordCredential": {"displayName": display_name, "endDateTime": _end_date(years)}},
        )
        result["password"] = created["secretText"]
    print_result(result)


@ad.group("sp")
def sp_group() -> None:
    """Manage service principals."""


@sp_group.command("create")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.pass_context
def sp_create(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    app = find_application(profile, ident)
    print_result(profile.graph("POST", "/servicePrincipals", {"appId": app["appId"]}))


@sp_group.command("show")
@click.option("--id", "ident", required=True)
@click.pass_context
def sp_show(ctx: click.Context, ident: str) -> None:
    print_result(find_principal(_profile(ctx), ident))


@sp_group.command("list")
@click.option("--display-name")
@click.option("--spn")
@click.option("--all", "show_all", is_flag=True)
@click.pass_context
def sp_list(ctx: click.Context, display_name: str | None, spn: str | None, show_all: bool) -> None:
    query = ""
    if display_name:
        query = f"?$filter=displayName eq '{_quote(display_name)}'"
    elif spn:
        query = f"?$filter=servicePrincipalNames/any(c:c eq '{_quote(spn)}')"
    print_result(_profile(ctx).graph("GET", f"/servicePrincipals{query}")["value"])


@sp_group.command("delete")
@click.option("--id", "ident", required=True)
@click.pass_context
def sp_delete(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    sp = find_principal(profile, ident)
    profile.graph("DELETE", f"/servicePrincipals/{sp['id']}")


@sp_group.command("create-for-rbac")
@click.option("--name", "-n", required=True, help="Display name of the application.")
@click.option("--years", type=int, default=1, show_default=True)
@click.option("--create-cert", is_flag=True)
@click.option("--cert")
@click.pass_context
def create_for_rbac(ctx: click.Context, name: str, years: int, create_cert: bool, cert: str | None) -> None:
    """Create an application, its service principal and a credential in one step."""
    profile = _profile(ctx)
    der, cert_file = _cert_material(create_cert, cert, name, profile.home)
    existing = profile.graph("GET", f"/applications?$filter=displayName eq '{_quote(name)}'")["value"]
    app = existing[0] if existing else profile.graph("POST", "/applications", {"displayName": name})
    sps = profile.graph("GET", f"/servicePrincipals?$filter=appId eq '{app['appId']}'")["value"]
    if not sps:
        profile.graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    result: dict[str, Any] = {"appId": app["appId"], "displayName": name}
    if der is not None:
        _add_certificate(profile, app, der, append=False)
        if cert_file:
            result["fileWithCertAndPrivateKey"] = cert_file
        result["password"] = None
    else:
        created = profile.graph(
            "POST",
            f"/applications/{app['id']}/addPassword",
            {"passwordCredential": {"displayName": "rbac", "endDateTime": _end_date(years)}},
        )
        result["password"] = created["secretText"]
    result["tenant"] = profile.tenant_id
    print_result(result)
