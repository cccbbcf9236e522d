"""Azure Resource Manager wire rules: request paths, resource ids, api-versions, the identity block.

Pure functions over strings and dicts. ARM ids are case-insensitive; we keep the casing a resource
was created with for display and compare on a lower-cased key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lanyard.core.errors import ArmError

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-(preview|beta|alpha|privatepreview))?$|^\d+\.\d+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_RG_NAME = re.compile(r"^[-\w._()]{1,90}$")
_SEGMENT = re.compile(r"^[^\x00-\x1f/\\?#%]{1,260}$")


def bad_request(message: str, code: str = "BadRequest", status: int = 400) -> ArmError:
    return ArmError(message, code=code, status=status)


def json_object(value: object, name: str) -> dict[str, Any]:
    """A request member that must be an object; absent (None) reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be a JSON object.", "InvalidRequestContent")
    return value


def not_found(message: str, code: str = "ResourceNotFound") -> ArmError:
    return ArmError(message, code=code, status=404)


def check_api_version(value: str | None) -> str:
    if not value:
        raise bad_request(
            "The api-version query parameter (?api-version=) is required for all requests.",
            "MissingApiVersionParameter",
        )
    if not _API_VERSION.match(value):
        raise bad_request(
            f"The api-version '{value[:40]}' is invalid. The supported versions are dates like '2024-11-01'.",
            "InvalidApiVersionParameter",
        )
    return value


def is_guid(value: str) -> bool:
    return bool(_GUID.match(value))


def check_resource_group_name(name: str) -> str:
    if not _RG_NAME.match(name) or name.endswith("."):
        raise bad_request(
            f"Resource group name '{name[:100]}' is invalid. It can contain alphanumerics, "
            "underscores, parentheses, hyphens and periods (not at the end), up to 90 characters.",
            "InvalidResourceGroupName",
        )
    return name


@dataclass(frozen=True)
class ResourceRef:
    """A provider resource, or a collection of them when `names` is one shorter than `types`."""

    subscription: str
    resource_group: str | None
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def is_collection(self) -> bool:
        return len(self.names) < len(self.types)

    @property
    def full_type(self) -> str:
        return "/".join((self.namespace, *self.types))

    @property
    def name(self) -> str:
        return self.names[-1]

    @property
    def scope(self) -> str:
        base = f"/subscriptions/{self.subscription}"
        return f"{base}/resourceGroups/{self.resource_group}" if self.resource_group else base

    @property
    def id(self) -> str:
        parts = [f"{self.scope}/providers/{self.namespace}"]
        for type_, name in zip(self.types, self.names, strict=False):
            parts.append(f"{type_}/{name}")
        if self.is_collection:
            parts.append(self.types[-1])
        return "/".join(parts)

    @property
    def parent(self) -> ResourceRef | None:
        if len(self.types) < 2:
            return None
        count = len(self.types) - 1
        return ResourceRef(
            self.subscription, self.resource_group, self.namespace, self.types[:count], self.names[:count]
        )

    def child(self, type_: str, name: str | None = None) -> ResourceRef:
        names = (*self.names, name) if name is not None else self.names
        return ResourceRef(self.subscription, self.resource_group, self.namespace, (*self.types, type_), names)


def resource_key(resource_id: str) -> str:
    return resource_id.rstrip("/").lower()


@dataclass(frozen=True)
class ArmPath:
    """A parsed request path. `kind` is one of: subscriptions, subscription, groups, group,
    group_resources, subscription_resources (`/subscriptions/{s}/resources`), namespaces
    (`/subscriptions/{s}/providers`), namespace (`…/providers/{namespace}`, in `namespace`), resource (see
    `resource`), extension (roleAssignments/roleDefinitions under `scope`)."""

    kind: str
    subscription: str | None = None
    resource_group: str | None = None
    resource: ResourceRef | None = None
    scope: str | None = None
    extension_type: str | None = None
    extension_name: str | None = None
    action: str | None = None
    namespace: str | None = None


def _split(path: str) -> list[str]:
    segments = [s for s in path.split("/") if s]
    for s in segments:
        if not _SEGMENT.match(s):
            raise bad_request("The request path contains an invalid segment.", "InvalidRequestUri")
    return segments


def parse_scope(scope: str) -> tuple[str, str | None, ResourceRef | None]:
    """A scope is a subscription, a resource group, or a resource id."""
    parsed = parse_path(scope)
    if parsed.kind == "subscription":
        return scope_parts(parsed)
    if parsed.kind == "group" or (
        parsed.kind == "resource" and parsed.resource and not parsed.resource.is_collection and parsed.action is None
    ):
        return scope_parts(parsed)
    raise bad_request(
        f"The scope '{scope[:200]}' is not a subscription, resource group or resource id.", "InvalidScope"
    )


def scope_parts(parsed: ArmPath) -> tuple[str, str | None, ResourceRef | None]:
    assert parsed.subscription is not None
    return parsed.subscription, parsed.resource_group, parsed.resource


def canonical_scope(sub: str, group: str | None, resource: ResourceRef | None) -> str:
    if resource is not None:
        return resource.id
    if group is not None:
        return f"/subscriptions/{sub}/resourceGroups/{group}"
    return f"/subscriptions/{sub}"


def parse_path(path: str) -> ArmPath:
    segments = _split(path)
    lower = [s.lower() for s in segments]
    if not segments or lower[0] != "subscriptions":
        raise not_found("The requested path is not an ARM resource path.", "NotFound")
    if len(segments) == 1:
        return ArmPath("subscriptions")
    sub = segments[1].lower()
    if not is_guid(sub):
        raise bad_request(
            f"The provided subscription identifier '{segments[1][:64]}' is malformed or invalid.",
            "InvalidSubscriptionId",
        )
    # Extension resources (role assignments/definitions) hang under any scope: split at the last
    # `providers/Microsoft.Authorization`.
    for i in range(len(lower) - 2, 1, -1):
        if lower[i] == "providers" and lower[i + 1] == "microsoft.authorization":
            rest = segments[i + 2 :]
            if not rest or len(rest) > 2:
                raise bad_request("Unsupported Microsoft.Authorization path.", "InvalidRequestUri")
            scope_path = "/" + "/".join(segments[:i])
            scope = canonical_scope(*parse_scope(scope_path))
            return ArmPath(
                "extension",
                subscription=sub,
                scope=scope,
                extension_type=rest[0],
                extension_name=rest[1] if len(rest) == 2 else None,
            )
    if len(segments) == 2:
        return ArmPath("subscription", subscription=sub)
    rest, rest_lower = segments[2:], lower[2:]
    if rest_lower == ["resources"]:
        return ArmPath("subscription_resources", subscription=sub)
    if rest_lower == ["providers"]:
        return ArmPath("namespaces", subscription=sub)
    if len(rest) == 2 and rest_lower[0] == "providers":
        return ArmPath("namespace", subscription=sub, namespace=rest[1])
    group: str | None = None
    if rest_lower[0] == "resourcegroups":
        if len(rest) == 1:
            return ArmPath("groups", subscription=sub)
        group = check_resource_group_name(rest[1])
        rest, rest_lower = rest[2:], rest_lower[2:]
        if not rest:
            return ArmPath("group", subscription=sub, resource_group=group)
        if rest_lower == ["resources"]:
            return ArmPath("group_resources", subscription=sub, resource_group=group)
        if rest_lower[0] == "deployments":
            # ARM also serves deployment operations without the provider segment (…/resourcegroups/g/deployments/…).
            rest, rest_lower = ["providers", "Microsoft.Resources", *rest], ["providers", "microsoft.resources", *rest]
    if rest_lower[0] != "providers" or len(rest) < 3:
        raise not_found("The requested path is not an ARM resource path.", "NotFound")
    namespace, pairs = rest[1], rest[2:]
    types = tuple(pairs[0::2])
    names = tuple(pairs[1::2])
    action = None
    if len(types) >= 2 and types[-1].lower() == "list" and len(names) == len(types) - 1:
        # POST …/config/appsettings/list: an action on the resource before it.
        action, types = "list", types[:-1]
    ref = ResourceRef(sub, group, namespace, types, names)
    return ArmPath("resource", subscription=sub, resource_group=group, resource=ref, action=action)


# -- the identity block -----------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityRequest:
    system: bool
    user_assigned: tuple[str, ...]  # resource ids as given


def parse_identity_type(value: object) -> frozenset[str]:
    """Lenient: any case, any whitespace, comma-separated; `None` (or empty) means no identity."""
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise bad_request("identity.type must be a string.", "InvalidIdentityType")
    parts = {p.strip().lower() for p in value.replace(" ", "").split(",") if p.strip()}
    if parts in ({"none"}, set()):
        return frozenset()
    if not parts <= {"systemassigned", "userassigned"}:
        raise bad_request(
            f"Invalid identity type '{value[:60]}'. Allowed: SystemAssigned, UserAssigned, "
            "'SystemAssigned, UserAssigned', None.",
            "InvalidIdentityType",
        )
    return frozenset(parts)


def parse_identity(block: object, current_user_ids: tuple[str, ...] = ()) -> IdentityRequest:
    """The `identity` block of a PUT/PATCH. For PATCH-style merges, a user-assigned id mapped to
    `null` removes it from `current_user_ids`; `{}` adds it."""
    if block is None:
        return IdentityRequest(False, ())
    if not isinstance(block, dict):
        raise bad_request("The identity property must be an object.", "InvalidIdentity")
    kinds = parse_identity_type(block.get("type"))
    uai = block.get("userAssignedIdentities")
    if uai is not None and not isinstance(uai, dict):
        raise bad_request("identity.userAssignedIdentities must be an object keyed by resource id.", "InvalidIdentity")
    user_ids: dict[str, str] = {resource_key(i): i for i in current_user_ids}
    for raw_id, value in (uai or {}).items():
        if value is None:
            user_ids.pop(resource_key(raw_id), None)
        elif isinstance(value, dict):
            user_ids[resource_key(raw_id)] = raw_id
        else:
            raise bad_request("Each userAssignedIdentities value must be an object or null.", "InvalidIdentity")
    if "userassigned" in kinds and not user_ids:
        raise bad_request(
            "The identity type UserAssigned requires at least one entry in userAssignedIdentities.", "BadRequest"
        )
    if "userassigned" not in kinds and uai and any(v is not None for v in uai.values()):
        raise bad_request(
            "userAssignedIdentities may only be given with an identity type that includes UserAssigned.", "BadRequest"
        )
    return IdentityRequest("systemassigned" in kinds, tuple(user_ids.values()) if "userassigned" in kinds else ())


def check_user_identity_id(raw_id: str) -> ResourceRef:
    try:
        parsed = parse_path(raw_id)
    except ArmError as exc:
        raise bad_request(
            f"The user-assigned identity id '{raw_id[:200]}' is not a valid resource id.", "InvalidIdentity"
        ) from exc
    ref = parsed.resource
    if (
        parsed.kind != "resource"
        or ref is None
        or ref.is_collection
        or ref.resource_group is None
        or ref.full_type.lower() != "microsoft.managedidentity/userassignedidentities"
    ):
        raise bad_request(
            f"The user-assigned identity id '{raw_id[:200]}' is not a "
            "Microsoft.ManagedIdentity/userAssignedIdentities resource id.",
            "InvalidIdentity",
        )
    return ref
