"""Microsoft.Storage/storageAccounts, as far as `az functionapp create --storage-account` needs one: the
account's endpoints and sku (az checks them) and its two access keys (`listKeys`, which az puts into the
app's AzureWebJobsStorage connection string). Lanyard serves no storage data plane: the endpoints name
where the account's services would be, under the platform's zone."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

import orjson

from lanyard.arm.hooks import SKU_KEY, ProviderHooks
from lanyard.protocol.arm import bad_request

KEYS_KEY = "__keys"
SKUS = frozenset(
    {
        "Standard_LRS",
        "Standard_GRS",
        "Standard_RAGRS",
        "Standard_ZRS",
        "Premium_LRS",
        "Standard_GZRS",
        "Standard_RAGZRS",
    }
)
SERVICES = ("blob", "queue", "table", "file", "dfs", "web")


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def prepare_account(stored: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(stored)
    sku = dict(out.get(SKU_KEY) or {"name": "Standard_LRS"})
    name = next((s for s in SKUS if s.lower() == str(sku.get("name", "")).lower()), None)
    if name is None:
        raise bad_request(f"The sku must be one of {sorted(SKUS)}.", "InvalidRequestPropertyValue")
    out[SKU_KEY] = {"name": name, "tier": name.split("_")[0]}
    # The keys are made once, when the account is; a PUT on an existing account keeps them.
    out[KEYS_KEY] = (previous or {}).get(KEYS_KEY) or [_key(), _key()]
    return out


def shape_account(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    name = str(ctx["name"]).lower()
    props["primaryEndpoints"] = {s: f"https://{name}.{s}.{ctx['zone']}/" for s in SERVICES}
    props["primaryLocation"] = ctx.get("location")
    props.setdefault("statusOfPrimary", "available")
    props.setdefault("supportsHttpsTrafficOnly", True)
    props.setdefault("minimumTlsVersion", "TLS1_2")
    props.setdefault("allowBlobPublicAccess", False)
    props.setdefault("accessTier", "Hot")
    props.setdefault(
        "networkAcls", {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []}
    )


def list_keys(account: dict[str, Any], stored: dict[str, Any]) -> tuple[int, str, bytes]:
    """POST …/storageAccounts/{name}/listKeys."""
    created = account.get("systemData", {}).get("createdAt")
    keys = [
        {"keyName": f"key{i + 1}", "value": value, "permissions": "FULL", "creationTime": created}
        for i, value in enumerate(stored.get(KEYS_KEY) or [])
    ]
    return 200, "application/json", orjson.dumps({"keys": keys})


ACCOUNT_TYPE = "Microsoft.Storage/storageAccounts"
ACCOUNT_HOOKS = ProviderHooks(prepare=prepare_account, shape=shape_account, actions=(("listkeys", list_keys),))


def check_name_availability(body: object, taken: set[str]) -> dict[str, Any]:
    """POST …/providers/Microsoft.Storage/checkNameAvailability: account names are DNS names."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise bad_request("The request needs a 'name' (string).", "InvalidRequestContent")
    name = body["name"]
    if not re.fullmatch(r"[a-z0-9]{3,24}", name):
        return {
            "nameAvailable": False,
            "reason": "AccountNameInvalid",
            "message": f"{name[:100]} is not a valid storage account name. Storage account name must be between 3 "
            "and 24 characters in length and use numbers and lower-case letters only.",
        }
    if name in taken:
        return {
            "nameAvailable": False,
            "reason": "AlreadyExists",
            "message": f"The storage account named {name} is already taken.",
        }
    return {"nameAvailable": True}
