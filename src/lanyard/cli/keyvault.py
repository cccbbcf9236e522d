"""`lanyard keyvault ...`: vaults (control plane) and their secrets (data plane), az-shaped."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from lanyard.cli.arm import API, arm, flatten, group_path, list_all, sub_path
from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result

SECRETS_API = "7.5"
API["keyvault"] = "2023-07-01"


def _profile(ctx: click.Context) -> Profile:
    return Profile.load(ctx.find_root().obj["home"])


def vault_path(profile: Profile, group: str, name: str) -> str:
    return f"{group_path(profile, group)}/providers/Microsoft.KeyVault/vaults/{name}"


def find_vault(profile: Profile, name: str, group: str | None) -> dict[str, Any]:
    """Like az, `--resource-group` is optional: vault names are unique."""
    if group:
        return dict(arm(profile, "GET", vault_path(profile, group, name), "keyvault"))
    for vault in list_all(profile, f"{sub_path(profile)}/providers/Microsoft.KeyVault/vaults", "keyvault"):
        if vault["name"].lower() == name.lower():
            return dict(vault)
    fail(f"The Vault '{name}' not found within subscription.")


def vault_json(vault: dict[str, Any]) -> dict[str, Any]:
    out = flatten({k: v for k, v in vault.items() if k != "properties"})
    out["properties"] = vault.get("properties", {})
    return out


@click.group("keyvault")
def keyvault() -> None:
    """Manage vaults and their secrets."""


@keyvault.command("create")
@click.option("--name", "-n", required=True)
@click.option("--resource-group", "-g", required=True)
@click.option("--location", "-l")
@click.option("--enable-rbac-authorization", type=click.BOOL, default=False, show_default=True)
@click.option("--retention-days", type=int, default=90, show_default=True)
@click.option("--enable-purge-protection", type=click.BOOL, default=None)
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    resource_group: str,
    location: str | None,
    enable_rbac_authorization: bool,
    retention_days: int,
    enable_purge_protection: bool | None,
) -> None:
    profile = _profile(ctx)
    loc = location or arm(profile, "GET", group_path(profile, resource_group), "resources")["location"]
    props: dict[str, Any] = {
        "tenantId": profile.tenant_id,
        "sku": {"family": "A", "name": "standard"},
        "enableRbacAuthorization": enable_rbac_authorization,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": retention_days,
        "accessPolicies": [],
    }
    if enable_purge_protection is not None:
        props["enablePurgeProtection"] = enable_purge_protection
    if not enable_rbac_authorization:
        # As az does: the creator gets full secret permissions.
        me = profile.endpoints["admin"]["object_id"]
        props["accessPolicies"] = [{"tenantId": profile.tenant_id, "objectId": me, "permissions": {"secrets": ["all"]}}]
    vault = arm(
        profile, "PUT", vault_path(profile, resource_group, name), "keyvault", {"location": loc, "properties": props}
    )
    print_result(vault_json(vault))


@keyvault.command("show")
@click.option("--name", "-n", required=True)
@click.option("--resource-group", "-g")
@click.pass_context
def show(ctx: click.Context, name: str, resource_group: str | None) -> None:
    print_result(vault_json(find_vault(_profile(ctx), name, resource_group)))


@keyvault.command("list")
@click.option("--resource-group", "-g")
@click.pass_context
def list_(ctx: click.Context, resource_group: str | None) -> None:
    profile = _profile(ctx)
    scope = group_path(profile, resource_group) if resource_group else sub_path(profile)
    print_result([vault_json(v) for v in list_all(profile, f"{scope}/providers/Microsoft.KeyVault/vaults", "keyvault")])


@keyvault.command("delete")
@click.option("--name", "-n", required=True)
@click.option("--resource-group", "-g")
@click.pass_context
def delete(ctx: click.Context, name: str, resource_group: str | None) -> None:
    profile = _profile(ctx)
    vault = find_vault(profile, name, resource_group)
    arm(profile, "DELETE", vault["id"], "keyvault")


def _update_policies(profile: Profile, vault: dict[str, Any], object_id: str, permissions: list[str] | None) -> None:
    props = dict(vault["properties"])
    if props.get("enableRbacAuthorization"):
        fail("Cannot set access policies on a vault that uses RBAC authorization (--enable-rbac-authorization).")
    policies = [p for p in props.get("accessPolicies", []) if p["objectId"].lower() != object_id.lower()]
    if permissions is not None:
        policies.append(
            {"tenantId": profile.tenant_id, "objectId": object_id.lower(), "permissions": {"secrets": permissions}}
        )
    props["accessPolicies"] = policies
    arm(
        profile,
        "PUT",
        vault["id"],
        "keyvault",
        {"location": vault["location"], "tags": vault.get("tags", {}), "properties": props},
    )


@keyvault.command("set-policy")
@click.option("--name", "-n", required=True)
@click.option("--resource-group", "-g")
@click.option("--object-id", required=True)
@click.option(
    "--secret-permissions", multiple=True, required=True, help="get list set delete backup restore recover purge all"
)
@click.pass_context
def set_policy(
    ctx: click.Context, name: str, resource_group: str | None, object_id: str, secret_permissions: tuple[str, ...]
) -> None:
    profile = _profile(ctx)
    vault = find_vault(profile, name, resource_group)
    _update_policies(profile, vault, object_id, [p.lower() for p in secret_permissions])
    print_result(vault_json(find_vault(profile, name, resource_group)))


@keyvault.command("delete-policy")
@click.option("--name", "-n", required=True)
@click.option("--resource-group", "-g")
@click.option("--object-id", required=True)
@click.pass_context
def delete_policy(ctx: click.Context, name: str, resource_group: str | None, object_id: str) -> None:
    profile = _profile(ctx)
    vault = find_vault(profile, name, resource_group)
    _update_policies(profile, vault, object_id, None)
    print_result(vault_json(find_vault(profile, name, resource_group)))


# -- secrets (data plane) -------------------------------------------------------------------------


def data(
    profile: Profile, method: str, vault_name: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 204)
) -> Any:
    url = f"https://{vault_name.lower()}.{profile.endpoints['vault_suffix']}{path}"
    sep = "&" if "?" in path else "?"
    return profile.call(
        method, f"{url}{sep}api-version={SECRETS_API}", resource=profile.endpoints["vault_audience"], body=body, ok=ok
    )


def pages(profile: Profile, vault_name: str, path: str) -> list[dict[str, Any]]:
    page = data(profile, "GET", vault_name, path)
    items = list(page.get("value", []))
    while page.get("nextLink"):
        page = profile.call("GET", page["nextLink"], resource=profile.endpoints["vault_audience"])
        items.extend(page.get("value", []))
    return items


@keyvault.group("secret")
def secret() -> None:
    """Manage secrets."""


def _epoch(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        fail(f"'{value}' is not an ISO 8601 date")


@secret.command("set")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.option("--value", required=True)
@click.option("--content-type")
@click.option("--disabled", type=click.BOOL, default=False)
@click.option("--expires")
@click.option("--not-before")
@click.option("--tags", multiple=True)
@click.pass_context
def secret_set(
    ctx: click.Context,
    vault_name: str,
    name: str,
    value: str,
    content_type: str | None,
    disabled: bool,
    expires: str | None,
    not_before: str | None,
    tags: tuple[str, ...],
) -> None:
    from lanyard.cli.arm import parse_pairs

    attributes: dict[str, Any] = {"enabled": not disabled}
    if expires:
        attributes["exp"] = _epoch(expires)
    if not_before:
        attributes["nbf"] = _epoch(not_before)
    body: dict[str, Any] = {"value": value, "attributes": attributes}
    if content_type:
        body["contentType"] = content_type
    if tags:
        body["tags"] = parse_pairs(tags)
    print_result(data(_profile(ctx), "PUT", vault_name, f"/secrets/{name}", body))


@secret.command("show")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.option("--version")
@click.pass_context
def secret_show(ctx: click.Context, vault_name: str, name: str, version: str | None) -> None:
    print_result(data(_profile(ctx), "GET", vault_name, f"/secrets/{name}/{version or ''}"))


@secret.command("list")
@click.option("--vault-name", required=True)
@click.pass_context
def secret_list(ctx: click.Context, vault_name: str) -> None:
    print_result(pages(_profile(ctx), vault_name, "/secrets"))


@secret.command("list-versions")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def secret_list_versions(ctx: click.Context, vault_name: str, name: str) -> None:
    print_result(pages(_profile(ctx), vault_name, f"/secrets/{name}/versions"))


@secret.command("delete")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def secret_delete(ctx: click.Context, vault_name: str, name: str) -> None:
    print_result(data(_profile(ctx), "DELETE", vault_name, f"/secrets/{name}"))


@secret.command("purge")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def secret_purge(ctx: click.Context, vault_name: str, name: str) -> None:
    data(_profile(ctx), "DELETE", vault_name, f"/deletedsecrets/{name}")


@secret.command("recover")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def secret_recover(ctx: click.Context, vault_name: str, name: str) -> None:
    print_result(data(_profile(ctx), "POST", vault_name, f"/deletedsecrets/{name}/recover"))


@secret.command("show-deleted")
@click.option("--vault-name", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def secret_show_deleted(ctx: click.Context, vault_name: str, name: str) -> None:
    print_result(data(_profile(ctx), "GET", vault_name, f"/deletedsecrets/{name}"))


@secret.command("list-deleted")
@click.option("--vault-name", required=True)
@click.pass_context
def secret_list_deleted(ctx: click.Context, vault_name: str) -> None:
    print_result(pages(_profile(ctx), vault_name, "/deletedsecrets"))
