"""Key Vault secrets wire rules (docs/protocols.md §4): names, bundles, the challenge, errors, permissions.

Pure: no storage, no HTTP framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_API_VERSION = re.compile(r"^(\d+\.\d+(-preview)?|\d{4}-\d{2}-\d{2}(-preview)?)$")
MAX_VALUE_CHARS = 25 * 1024
SECRET_PERMISSIONS = ("get", "list", "set", "delete", "backup", "restore", "recover", "purge")
DATA_ACTION = "Microsoft.KeyVault/vaults/secrets/"


class VaultError(Exception):
    """A Key Vault error body: {"error": {"code", "message", "innererror"?}} with a status."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def check_api_version(value: str | None) -> str:
    if not value or not _API_VERSION.match(value):
        raise VaultError(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
    return value


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise VaultError(400, "BadParameter", "The secret name is invalid: use 1-127 letters, digits or dashes.")
    return name


def challenge(authorization_uri: str, resource: str) -> str:
    """The SDK splits on ',' then '=': neither may appear inside a value (docs/protocols.md §4.2)."""
    return f'Bearer authorization="{authorization_uri}", resource="{resource}"'


@dataclass(frozen=True)
class Operation:
    """A secrets operation: the access-policy permission and the RBAC data action it needs."""

    permission: str
    data_action: str


OPERATIONS = {
    "get": Operation("get", DATA_ACTION + "getSecret/action"),
    "list": Operation("list", DATA_ACTION + "readMetadata/action"),
    "set": Operation("set", DATA_ACTION + "setSecret/action"),
    "update": Operation("set", DATA_ACTION + "update/action"),
    "delete": Operation("delete", DATA_ACTION + "delete"),
    "backup": Operation("backup", DATA_ACTION + "backup/action"),
    "restore": Operation("restore", DATA_ACTION + "restore/action"),
    "recover": Operation("recover", DATA_ACTION + "recover/action"),
    "purge": Operation("purge", DATA_ACTION + "purge/action"),
    "get_deleted": Operation("list", DATA_ACTION + "readMetadata/action"),
}


@dataclass(frozen=True)
class SecretVersion:
    name: str
    version: str
    value: str | None
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int


def attributes(v: SecretVersion, recovery_level: str, recoverable_days: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": recovery_level,
    }
    if recoverable_days:
        attrs["recoverableDays"] = recoverable_days
    if v.not_before is not None:
        attrs["nbf"] = v.not_before
    if v.expires is not None:
        attrs["exp"] = v.expires
    return attrs


def secret_bundle(
    base: str, v: SecretVersion, recovery_level: str, days: int, *, with_value: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{base}/secrets/{v.name}/{v.version}",
        "attributes": attributes(v, recovery_level, days),
    }
    if with_value and v.value is not None:
        body["value"] = v.value
    if v.content_type is not None:
        body["contentType"] = v.content_type
    if v.tags:
        body["tags"] = v.tags
    return body


def secret_item(
    base: str, v: SecretVersion, recovery_level: str, days: int, *, versioned: bool = False
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"{base}/secrets/{v.name}" + (f"/{v.version}" if versioned else ""),
        "attributes": attributes(v, recovery_level, days),
    }
    if v.content_type is not None:
        item["contentType"] = v.content_type
    if v.tags:
        item["tags"] = v.tags
    return item


def deleted_fields(base: str, name: str, deleted: int, purge_at: int) -> dict[str, Any]:
    return {"recoveryId": f"{base}/deletedsecrets/{name}", "deletedDate": deleted, "scheduledPurgeDate": purge_at}


def parse_set_body(body: Any) -> tuple[str, str | None, dict[str, str] | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
    value = body.get("value")
    if not isinstance(value, str):
        raise VaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
    if len(value) > MAX_VALUE_CHARS:
        raise VaultError(400, "BadParameter", f"The secret value exceeds {MAX_VALUE_CHARS} characters.")
    return value, content_type_of(body), tags_of(body), attributes_of(body)


def content_type_of(body: dict[str, Any]) -> str | None:
    value = body.get("contentType")
    if value is not None and (not isinstance(value, str) or len(value) > 255):
        raise VaultError(400, "BadParameter", "contentType must be a string of at most 255 characters.")
    return value


def tags_of(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if (
        not isinstance(tags, dict)
        or len(tags) > 15
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 512 and len(v) <= 512 for k, v in tags.items()
        )
    ):
        raise VaultError(400, "BadParameter", "tags must map at most 15 names to string values.")
    return tags


def attributes_of(body: dict[str, Any]) -> dict[str, Any]:
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise VaultError(400, "BadParameter", "attributes must be an object.")
    out: dict[str, Any] = {}
    if "enabled" in attrs:
        if not isinstance(attrs["enabled"], bool):
            raise VaultError(400, "BadParameter", "attributes.enabled must be a boolean.")
        out["enabled"] = attrs["enabled"]
    for name in ("nbf", "exp"):
        if attrs.get(name) is not None:
            if isinstance(attrs[name], bool) or not isinstance(attrs[name], int):
                raise VaultError(400, "BadParameter", f"attributes.{name} must be an integer (epoch seconds).")
            out[name] = attrs[name]
    return out
