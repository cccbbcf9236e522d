"""Microsoft.KeyVault/vaults at the control plane: the properties ARM accepts (tenant, flags, access
policies), the platform-wide name (a vault is a DNS name), who may switch its permission model, its
vaultUri, and its data dropped with it."""

from __future__ import annotations

import re
from typing import Any

from lanyard.arm.hooks import Host, ProviderHooks, WriteRequest
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import bad_request
from lanyard.storage import arm_repo as repo
from lanyard.storage import vault_repo

VAULT_TYPE = "Microsoft.KeyVault/vaults"
SECRET_PERMISSIONS = frozenset({"get", "list", "set", "delete", "backup", "restore", "recover", "purge", "all"})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def normalized_properties(props: dict[str, Any], previous: dict[str, Any] | None, tenant_id: str) -> dict[str, Any]:
    """Key Vault properties as ARM accepts them; returns them normalized (lower-case ids, permissions)."""
    out = dict(props)
    tenant = str(out.get("tenantId") or tenant_id).lower()
    if tenant != tenant_id:
        raise bad_request(f"The vault's tenantId must be this platform's tenant '{tenant_id}'.", "BadRequest")
    out["tenantId"] = tenant
    out.setdefault("sku", {"family": "A", "name": "standard"})
    for flag in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
        if flag in out and out[flag] is not None and not isinstance(out[flag], bool):
            raise bad_request(f"{flag} must be a boolean.", "BadRequest")
    days = out.get("softDeleteRetentionInDays")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 90):
        raise bad_request("softDeleteRetentionInDays must be an integer from 7 to 90.", "BadRequest")
    if previous and previous.get("enablePurgeProtection") and out.get("enablePurgeProtection") is False:
        raise bad_request("Purge protection cannot be disabled once it is enabled.", "BadRequest")
    policies = out.get("accessPolicies") or []
    if not isinstance(policies, list) or len(policies) > 1024:
        raise bad_request("accessPolicies must be an array of at most 1024 entries.", "BadRequest")
    normalized = []
    for entry in policies:
        if not isinstance(entry, dict) or not _GUID.match(str(entry.get("objectId", ""))):
            raise bad_request("Each access policy needs an objectId (a GUID).", "BadRequest")
        permissions = entry.get("permissions") or {}
        if not isinstance(permissions, dict):
            raise bad_request("accessPolicies[].permissions must be an object.", "BadRequest")
        secrets = permissions.get("secrets") or []
        if not isinstance(secrets, list) or not {str(p).lower() for p in secrets} <= SECRET_PERMISSIONS:
            raise bad_request(f"Secret permissions must be among {sorted(SECRET_PERMISSIONS)}.", "BadRequest")
        normalized.append(
            {
                "tenantId": str(entry.get("tenantId") or tenant_id).lower(),
                "objectId": str(entry["objectId"]).lower(),
                "permissions": {**permissions, "secrets": [str(p).lower() for p in secrets]},
            }
        )
    out["accessPolicies"] = normalized
    return out


def validate_vault(stored: dict[str, Any], write: WriteRequest) -> dict[str, Any]:
    out = normalized_properties(stored, write.previous, write.host.tenant_id)
    if write.previous is not None and bool(write.previous.get("enableRbacAuthorization")) != bool(
        out.get("enableRbacAuthorization")
    ):
        # As in Azure: whoever switches a vault between access policies and RBAC decides who
        # can grant access to it, so it takes the right to assign roles (not Contributor's).
        write.host.authorize(
            write.session, write.caller, "Microsoft.Authorization/roleAssignments/write", write.resource_id
        )
    # Vault names are DNS names: unique across the whole platform, not just the group.
    for other in repo.list_resources(write.session, type_=VAULT_TYPE):
        if other.name.lower() == write.ref.name.lower() and other.key != write.key:
            raise ArmError(
                f"The vault name '{write.ref.name}' is already in use.", code="VaultAlreadyExists", status=409
            )
    return out


def shape_vault(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    props["vaultUri"] = f"https://{str(ctx['name']).lower()}.{ctx['vault_suffix']}/"
    props.setdefault("enableSoftDelete", True)
    props.setdefault("softDeleteRetentionInDays", 90)
    props.setdefault("enableRbacAuthorization", False)
    props.setdefault("accessPolicies", [])


def purge_vault(host: Host, s: Any, record: repo.ResourceRecord) -> None:
    vault_repo.purge_vault(s, record.key)


VAULT_HOOKS = ProviderHooks(validate=validate_vault, shape=shape_vault, on_delete=purge_vault)
