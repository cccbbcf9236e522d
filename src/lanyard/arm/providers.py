"""The resource types the control plane knows: names, kinds, identity support, and their shapes."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from lanyard.arm import storage, web
from lanyard.arm.hooks import APPSETTINGS_KEY, NO_HOOKS, SKU_KEY, ProviderHooks
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import ResourceRef, bad_request

__all__ = ["APPSETTINGS_KEY", "SKU_KEY", "TYPES", "ResourceType", "resource_type"]

_NAME_SITES = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])?$")
_NAME_SLOT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,57}[A-Za-z0-9])?$")
_NAME_FARM = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_NAME_UAI = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$")
_NAME_VAULT = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_NAME_STORAGE = re.compile(r"^[a-z0-9]{3,24}$")
_NAME_VM = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$")

_WEB_VERSIONS = ("2024-04-01", "2023-12-01", "2023-01-01", "2022-09-01", "2022-03-01", "2018-02-01")


@dataclass(frozen=True)
class ResourceType:
    full_type: str  # canonical casing
    name_pattern: re.Pattern[str]
    name_rule: str
    supports_identity: bool = False
    kinds: tuple[str, ...] = ()
    default_kind: str | None = None
    # Microsoft.Web's SDK refuses 201 on PUT; others accept it.
    created_status: int = 201
    extra: dict[str, Any] = field(default_factory=dict)
    # What `GET /subscriptions/{s}/providers/{namespace}` lists; az picks the newest when given none.
    api_versions: tuple[str, ...] = ("2024-01-01",)
    hooks: ProviderHooks = NO_HOOKS

    def check_name(self, name: str) -> str:
        if not self.name_pattern.match(name):
            raise bad_request(
                f"The resource name '{name[:100]}' is invalid for {self.full_type}: {self.name_rule}",
                "InvalidResourceName",
            )
        return name

    def check_kind(self, kind: object, existing: str | None) -> str | None:
        if kind is None:
            return existing or self.default_kind
        if not isinstance(kind, str):
            raise bad_request("kind must be a string.", "InvalidRequestContent")
        if self.kinds and kind.lower().split(",")[0] not in self.kinds:
            raise bad_request(
                f"kind '{kind[:40]}' is not valid for {self.full_type}; use one of {list(self.kinds)}.", "InvalidKind"
            )
        return kind


TYPES: dict[str, ResourceType] = {
    t.full_type.lower(): t
    for t in (
        ResourceType(
            "Microsoft.Web/serverfarms",
            _NAME_FARM,
            "1-60 letters, digits, '-' or '_'.",
            created_status=200,
            default_kind="app",
            api_versions=_WEB_VERSIONS,
            hooks=web.FARM_HOOKS,
        ),
        ResourceType(
            "Microsoft.Web/sites",
            _NAME_SITES,
            "2-60 letters, digits or hyphens, not starting or ending with a hyphen.",
            supports_identity=True,
            kinds=("app", "functionapp"),
            default_kind="app",
            created_status=200,
            api_versions=_WEB_VERSIONS,
            hooks=web.SITE_HOOKS,
        ),
        ResourceType(
            "Microsoft.Web/sites/slots",
            _NAME_SLOT,
            "1-59 letters, digits or hyphens, not starting or ending with a hyphen.",
            supports_identity=True,
            kinds=("app", "functionapp"),
            created_status=200,
            api_versions=_WEB_VERSIONS,
            hooks=web.SITE_HOOKS,
        ),
        ResourceType(
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            _NAME_UAI,
            "3-128 letters, digits, hyphens or underscores, starting with a letter or digit.",
            api_versions=("2024-11-30", "2023-01-31", "2018-11-30"),
        ),
        ResourceType(
            "Microsoft.KeyVault/vaults",
            _NAME_VAULT,
            "3-24 letters, digits or hyphens, starting with a letter, ending with a letter or digit, "
            "without consecutive hyphens.",
            api_versions=("2024-11-01", "2023-07-01", "2022-07-01", "2019-09-01"),
        ),
        ResourceType(
            "Microsoft.Compute/virtualMachines",
            _NAME_VM,
            "1-64 letters, digits, '.', '-' or '_', not ending with '.' or '-'.",
            supports_identity=True,
            api_versions=("2024-07-01", "2024-03-01", "2023-09-01", "2022-11-01"),
        ),
        ResourceType(
            "Microsoft.Storage/storageAccounts",
            _NAME_STORAGE,
            "3-24 lower-case letters or digits.",
            kinds=("storagev2", "storage", "blobstorage", "blockblobstorage", "filestorage"),
            default_kind="StorageV2",
            created_status=200,
            api_versions=("2024-01-01", "2023-05-01", "2023-01-01", "2022-09-01"),
            hooks=storage.ACCOUNT_HOOKS,
        ),
    )
}

UAI_TYPE = "microsoft.managedidentity/userassignedidentities"
VAULT_TYPE = "microsoft.keyvault/vaults"
SECRET_PERMISSIONS = frozenset({"get", "list", "set", "delete", "backup", "restore", "recover", "purge", "all"})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SITE_TYPES = frozenset({"microsoft.web/sites", "microsoft.web/sites/slots"})


def resource_type(ref: ResourceRef) -> ResourceType:
    found = TYPES.get(ref.full_type.lower())
    if found is None:
        raise ArmError(
            f"No registered resource provider found for resource type '{ref.full_type[:120]}'. Lanyard supports: "
            + ", ".join(t.full_type for t in TYPES.values())
            + ".",
            code="NoRegisteredProviderFound",
            status=400,
        )
    return found


def principal_display_name(ref: ResourceRef) -> str:
    """Azure names a system-assigned principal after its resource; a slot's is `<app>/slots/<slot>`."""
    if ref.full_type.lower() == "microsoft.web/sites/slots":
        return f"{ref.names[0]}/slots/{ref.names[1]}"
    return ref.name


def shaped_properties(
    type_: ResourceType, ref: ResourceRef, stored: dict[str, Any], ctx: dict[str, Any]
) -> dict[str, Any]:
    """Public ARM properties: the stored ones plus read-only fields the service computes."""
    props = {k: v for k, v in stored.items() if not k.startswith("__")}
    props["provisioningState"] = "Succeeded"
    low = type_.full_type.lower()
    if low in SITE_TYPES:
        host = f"{ref.names[0]}{'-' + ref.names[1] if len(ref.names) > 1 else ''}.{ctx['zone']}"
        props.setdefault("state", "Running")
        props.setdefault("enabled", True)
        props["hostNames"] = [host]
        props["enabledHostNames"] = [host]
        props["defaultHostName"] = host
        props.setdefault("httpsOnly", False)
        props.setdefault("reserved", False)
    elif low == "microsoft.web/serverfarms":
        props.setdefault("status", "Ready")
        props["numberOfSites"] = ctx.get("number_of_sites", 0)
    elif low == VAULT_TYPE:
        props["vaultUri"] = f"https://{ref.name.lower()}.{ctx['vault_suffix']}/"
        props.setdefault("enableSoftDelete", True)
        props.setdefault("softDeleteRetentionInDays", 90)
        props.setdefault("enableRbacAuthorization", False)
        props.setdefault("accessPolicies", [])
    elif low == "microsoft.compute/virtualmachines":
        props.setdefault("vmId", str(uuid.uuid5(uuid.NAMESPACE_URL, ref.id.lower())))
    if type_.hooks.shape is not None:
        type_.hooks.shape(props, ctx)
    return props


def validate_vault(props: dict[str, Any], previous: dict[str, Any] | None, tenant_id: str) -> dict[str, Any]:
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
