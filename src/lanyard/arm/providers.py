"""The resource types the control plane knows: names, kinds, identity support, and their shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lanyard.arm import compute, identity, insights, storage, vault, web
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
_NAME_COMPONENT = re.compile(r"^[A-Za-z0-9_.()-]{0,254}[A-Za-z0-9_()-]$")
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
            web.FARM_TYPE,
            _NAME_FARM,
            "1-60 letters, digits, '-' or '_'.",
            created_status=200,
            default_kind="app",
            api_versions=_WEB_VERSIONS,
            hooks=web.FARM_HOOKS,
        ),
        ResourceType(
            web.SITE_TYPE,
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
            web.SLOT_TYPE,
            _NAME_SLOT,
            "1-59 letters, digits or hyphens, not starting or ending with a hyphen.",
            supports_identity=True,
            kinds=("app", "functionapp"),
            created_status=200,
            api_versions=_WEB_VERSIONS,
            hooks=web.SLOT_HOOKS,
        ),
        ResourceType(
            identity.UAI_TYPE,
            _NAME_UAI,
            "3-128 letters, digits, hyphens or underscores, starting with a letter or digit.",
            api_versions=("2024-11-30", "2023-01-31", "2018-11-30"),
            hooks=identity.IDENTITY_HOOKS,
        ),
        ResourceType(
            vault.VAULT_TYPE,
            _NAME_VAULT,
            "3-24 letters, digits or hyphens, starting with a letter, ending with a letter or digit, "
            "without consecutive hyphens.",
            api_versions=("2024-11-01", "2023-07-01", "2022-07-01", "2019-09-01"),
            hooks=vault.VAULT_HOOKS,
        ),
        ResourceType(
            compute.VM_TYPE,
            _NAME_VM,
            "1-64 letters, digits, '.', '-' or '_', not ending with '.' or '-'.",
            supports_identity=True,
            api_versions=("2024-07-01", "2024-03-01", "2023-09-01", "2022-11-01"),
            hooks=compute.VM_HOOKS,
        ),
        ResourceType(
            storage.ACCOUNT_TYPE,
            _NAME_STORAGE,
            "3-24 lower-case letters or digits.",
            kinds=("storagev2", "storage", "blobstorage", "blockblobstorage", "filestorage"),
            default_kind="StorageV2",
            created_status=200,
            api_versions=("2024-01-01", "2023-05-01", "2023-01-01", "2022-09-01"),
            hooks=storage.ACCOUNT_HOOKS,
        ),
        ResourceType(
            insights.COMPONENT_TYPE,
            _NAME_COMPONENT,
            "1-255 letters, digits, '_', '-', '.', '(' or ')', not ending with '.'.",
            kinds=("web", "ios", "other", "store", "java", "phone"),
            default_kind="web",
            created_status=200,
            api_versions=("2020-02-02", "2018-05-01-preview", "2015-05-01"),
            hooks=insights.COMPONENT_HOOKS,
        ),
    )
}

# Stored as resources but not served as provider resources: left out of the generic resource lists.
UNLISTED_TYPES = frozenset({"microsoft.resources/deployments"})


def listed(record_type: str) -> bool:
    return record_type.lower() not in UNLISTED_TYPES


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


def hooks_of(record_type: str) -> ProviderHooks:
    """A stored record's provider hooks; none for records that are not provider resources (deployments)."""
    found = TYPES.get(record_type.lower())
    return found.hooks if found is not None else NO_HOOKS


def shaped_properties(
    type_: ResourceType, ref: ResourceRef, stored: dict[str, Any], ctx: dict[str, Any]
) -> dict[str, Any]:
    """Public ARM properties: the stored ones plus read-only fields the provider computes."""
    props = {k: v for k, v in stored.items() if not k.startswith("__")}
    props["provisioningState"] = "Succeeded"
    if type_.hooks.shape is not None:
        type_.hooks.shape(props, ctx)
    return props
