"""`lanyard identity federated-credential create|list|show|delete`, with az's flags and output."""

from __future__ import annotations

import click

from lanyard.cli.arm import _profile, arm, flatten, uai_path
from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result

WORKLOAD_ISSUER_PATH = "/lanyard/v1/workload-issuer"
# claimsMatchingExpression exists only in the flexible-credential preview api-versions.
FLEXIBLE_API = "2023-07-31-preview"


def fic_path(profile: Profile, group: str, identity_name: str, name: str | None = None) -> str:
    path = f"{uai_path(profile, group, identity_name)}/federatedIdentityCredentials"
    return f"{path}/{name}" if name else path


def platform_workload_issuer(profile: Profile) -> str:
    """This platform's own issuer of projected tokens (AKS-style runs, docs/federation.md)."""
    return f"{profile.endpoints['authority'].rstrip('/')}{WORKLOAD_ISSUER_PATH}/{profile.endpoints['tenant_id']}"


def _call(profile: Profile, method: str, path: str, flexible: bool, body: object = None) -> object:
    if not flexible:
        return arm(profile, method, path, "msi", body)
    base = profile.endpoints["arm"].rstrip("/")
    return profile.call(
        method, f"{base}{path}?api-version={FLEXIBLE_API}", resource="https://management.azure.com", body=body
    )


@click.group("federated-credential")
def federated_credential() -> None:
    """Manage federated identity credentials of a user-assigned identity (workload identity federation)."""


@federated_credential.command("create")
@click.option("--resource-group", "-g", required=True)
@click.option("--identity-name", required=True, help="The user-assigned identity.")
@click.option("--name", "-n", required=True, help="The credential's name (3-120 letters, digits, '-', '_').")
@click.option("--issuer", help="The outside issuer's URL, exactly as its tokens' iss claim.")
@click.option(
    "--workload-issuer",
    is_flag=True,
    help="Trust this platform's own workload issuer (what `run --platform aks` signs with) instead of --issuer.",
)
@click.option(
    "--subject",
    help="The sub claim to trust: exact, or a pattern where * matches within a ':' segment and ** matches anything.",
)
@click.option("--audiences", multiple=True, help="Accepted aud values (default api://AzureADTokenExchange).")
@click.option("--claims-matching-expression-value", help="An expression over the claims instead of --subject.")
@click.option("--claims-matching-expression-version", type=int, default=1, show_default=True)
@click.pass_context
def fic_create(
    ctx: click.Context,
    resource_group: str,
    identity_name: str,
    name: str,
    issuer: str | None,
    workload_issuer: bool,
    subject: str | None,
    audiences: tuple[str, ...],
    claims_matching_expression_value: str | None,
    claims_matching_expression_version: int,
) -> None:
    """Create or update a federated identity credential."""
    profile = _profile(ctx)
    if bool(issuer) == workload_issuer:
        fail("give exactly one of --issuer and --workload-issuer")
    if bool(subject) == bool(claims_matching_expression_value):
        fail("give exactly one of --subject and --claims-matching-expression-value")
    props: dict[str, object] = {
        "issuer": issuer or platform_workload_issuer(profile),
        "audiences": [a for value in audiences for a in value.split()] or ["api://AzureADTokenExchange"],
    }
    if subject:
        props["subject"] = subject
    else:
        props["claimsMatchingExpression"] = {
            "value": claims_matching_expression_value,
            "languageVersion": claims_matching_expression_version,
        }
    flexible = claims_matching_expression_value is not None
    path = fic_path(profile, resource_group, identity_name, name)
    print_result(flatten(_call(profile, "PUT", path, flexible, {"properties": props})))  # type: ignore[arg-type]


@federated_credential.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--identity-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def fic_show(ctx: click.Context, resource_group: str, identity_name: str, name: str) -> None:
    """Show a federated identity credential."""
    profile = _profile(ctx)
    found = _call(profile, "GET", fic_path(profile, resource_group, identity_name, name), True)
    print_result(flatten(found))  # type: ignore[arg-type]


@federated_credential.command("list")
@click.option("--resource-group", "-g", required=True)
@click.option("--identity-name", required=True)
@click.pass_context
def fic_list(ctx: click.Context, resource_group: str, identity_name: str) -> None:
    """List the federated identity credentials of an identity (every page: there is no cap of 20)."""
    profile = _profile(ctx)
    page = _call(profile, "GET", fic_path(profile, resource_group, identity_name), True)
    assert isinstance(page, dict)
    items = list(page.get("value", []))
    while page.get("nextLink"):
        page = profile.call("GET", page["nextLink"], resource="https://management.azure.com")
        items.extend(page.get("value", []))
    print_result([flatten(i) for i in items])


@federated_credential.command("delete")
@click.option("--resource-group", "-g", required=True)
@click.option("--identity-name", required=True)
@click.option("--name", "-n", required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation (accepted for az compatibility).")
@click.pass_context
def fic_delete(ctx: click.Context, resource_group: str, identity_name: str, name: str, yes: bool) -> None:
    """Delete a federated identity credential."""
    profile = _profile(ctx)
    arm(profile, "DELETE", fic_path(profile, resource_group, identity_name, name), "msi")


# -- applications: `lanyard ad app federated-credential`, az's flags ----------------------------


def _parameters(raw: str) -> dict[str, object]:
    """--parameters: JSON, or @FILE holding JSON, as az takes it."""
    import json
    from pathlib import Path

    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).expanduser().read_text()
        except OSError as exc:
            fail(f"cannot read {raw[1:]}: {exc.strerror}")
    try:
        value = json.loads(text)
    except ValueError:
        fail("--parameters must be JSON (or @FILE holding JSON)")
    if not isinstance(value, dict):
        fail("--parameters must be a JSON object")
    return value


@click.group("federated-credential")
def app_federated_credential() -> None:
    """Manage federated identity credentials of an application (workload identity federation)."""


def _app_base(profile: Profile, ident: str) -> str:
    from lanyard.cli.ad import find_application

    return f"/applications/{find_application(profile, ident)['id']}/federatedIdentityCredentials"


@app_federated_credential.command("create")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.option("--parameters", required=True, help="JSON (or @FILE): name, issuer, subject, audiences, description.")
@click.pass_context
def app_fic_create(ctx: click.Context, ident: str, parameters: str) -> None:
    """Create a federated identity credential on an application."""
    profile = _profile(ctx)
    print_result(profile.graph("POST", _app_base(profile, ident), _parameters(parameters)))


@app_federated_credential.command("list")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.pass_context
def app_fic_list(ctx: click.Context, ident: str) -> None:
    """List an application's federated identity credentials."""
    profile = _profile(ctx)
    print_result(profile.graph("GET", _app_base(profile, ident))["value"])


@app_federated_credential.command("show")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.option("--federated-credential-id", "credential", required=True, help="The credential's id or name.")
@click.pass_context
def app_fic_show(ctx: click.Context, ident: str, credential: str) -> None:
    """Show one federated identity credential of an application."""
    profile = _profile(ctx)
    print_result(profile.graph("GET", f"{_app_base(profile, ident)}/{credential}"))


@app_federated_credential.command("update")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.option("--federated-credential-id", "credential", required=True, help="The credential's id or name.")
@click.option("--parameters", required=True, help="JSON (or @FILE) with the properties to change.")
@click.pass_context
def app_fic_update(ctx: click.Context, ident: str, credential: str, parameters: str) -> None:
    """Change a federated identity credential of an application (its name stays)."""
    profile = _profile(ctx)
    body = {k: v for k, v in _parameters(parameters).items() if k != "name"}
    profile.graph("PATCH", f"{_app_base(profile, ident)}/{credential}", body)


@app_federated_credential.command("delete")
@click.option("--id", "ident", required=True, help="The application's app id or object id.")
@click.option("--federated-credential-id", "credential", required=True, help="The credential's id or name.")
@click.pass_context
def app_fic_delete(ctx: click.Context, ident: str, credential: str) -> None:
    """Delete a federated identity credential of an application."""
    profile = _profile(ctx)
    profile.graph("DELETE", f"{_app_base(profile, ident)}/{credential}")
