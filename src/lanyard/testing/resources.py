"""Throwaway resources made the way `lanyard group/webapp/keyvault ...` make them, in process (one
HTTPS call each, no CLI start-up): used by the pytest plugin and by `lanyard doctor`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lanyard.cli.arm import API, arm, group_path, site_path
from lanyard.cli.context import Profile

API.setdefault("keyvault", "2023-07-01")  # as cli/keyvault.py registers it
SECRETS_API = "7.5"


def unique_name(prefix: str) -> str:
    """Vault names are global and 3-24 letters, digits and hyphens: a prefix plus 8 hex digits fits."""
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Site:
    group: str
    name: str
    id: str
    principal_id: str


@dataclass(frozen=True)
class Vault:
    group: str
    name: str
    id: str
    uri: str  # https://NAME.vault.<zone>:PORT/, what SecretClient takes


class Resources:
    """Control-plane calls as the home's admin application (the CLI's own credential)."""

    def __init__(self, home: Path) -> None:
        self.profile = Profile.load(home)

    def create_group(self, name: str, location: str = "westus") -> None:
        arm(self.profile, "PUT", group_path(self.profile, name), "resources", {"location": location})

    def delete_group(self, name: str) -> None:
        """Everything in the group goes with it; a vault is purged, so its name is free again."""
        arm(self.profile, "DELETE", group_path(self.profile, name), "resources", ok=(200, 202, 204, 404))

    def create_site(self, group: str, name: str, kind: str = "app") -> Site:
        body = {"location": "westus", "kind": kind, "properties": {}, "identity": {"type": "SystemAssigned"}}
        site = arm(self.profile, "PUT", site_path(self.profile, group, name), "web", body)
        return Site(group, name, str(site["id"]), str(site["identity"]["principalId"]))

    def create_vault(self, group: str, name: str, readers: tuple[str, ...] = ()) -> Vault:
        """An access-policy vault: the admin may do anything with secrets, each reader may get them."""
        tenant = self.profile.tenant_id
        admin = self.profile.endpoints["admin"]["object_id"]
        policies = [{"tenantId": tenant, "objectId": admin, "permissions": {"secrets": ["all"]}}]
        policies += [{"tenantId": tenant, "objectId": oid, "permissions": {"secrets": ["get"]}} for oid in readers]
        props: dict[str, Any] = {
            "tenantId": tenant,
            "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "accessPolicies": policies,
        }
        path = f"{group_path(self.profile, group)}/providers/Microsoft.KeyVault/vaults/{name}"
        vault = arm(self.profile, "PUT", path, "keyvault", {"location": "westus", "properties": props})
        return Vault(group, name, str(vault["id"]), str(vault["properties"]["vaultUri"]))

    def set_secret(self, vault: Vault, name: str, value: str) -> None:
        """Through the vault's own host name, as SecretClient would: it needs *.vault.<zone> to resolve."""
        url = f"{vault.uri.rstrip('/')}/secrets/{name}?api-version={SECRETS_API}"
        self.profile.call("PUT", url, resource=self.profile.endpoints["vault_audience"], body={"value": value})
