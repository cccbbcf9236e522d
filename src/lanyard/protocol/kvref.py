"""Key Vault references in app settings (docs/keyvault-references.md): the two syntaxes App Service
accepts, its resolve statuses and the status document of `config/configreferences/appsettings`.

Pure: no storage, no HTTP. The agent parses to resolve at start; the control plane parses to report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

PREFIX = "@Microsoft.KeyVault("
_VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")
MAX_REFERENCE = 2048
SECRETS_API = "7.4"

# App Service's ResolveStatus values (Microsoft.Web ApiKVReference.properties.status).
RESOLVED = "Resolved"
INVALID_SYNTAX = "InvalidSyntax"
MSI_NOT_ENABLED = "MSINotEnabled"
VAULT_NOT_FOUND = "VaultNotFound"
SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a status name
SECRET_VERSION_NOT_FOUND = "SecretVersionNotFound"  # noqa: S105 - a status name
ACCESS_DENIED = "AccessToKeyVaultDenied"
UNAUTHORIZED_CLIENT = "UnauthorizedClient"
FETCH_TIMED_OUT = "FetchTimedOut"
OTHER_REASONS = "OtherReasons"

_NOT_RESOLVED = "Key Vault reference was not able to be resolved because"


@dataclass(frozen=True)
class Reference:
    vault_name: str
    secret_name: str
    secret_version: str | None


@dataclass(frozen=True)
class Outcome:
    status: str
    details: str

    @property
    def resolved(self) -> bool:
        return self.status == RESOLVED


class ReferenceError(Exception):
    """The setting is a reference that names no vault secret here; `outcome` says why."""

    def __init__(self, outcome: Outcome, partial: Reference | None = None) -> None:
        super().__init__(outcome.details)
        self.outcome = outcome
        self.partial = partial  # what could be read of it, for the status document


def is_reference(value: str) -> bool:
    return value.lstrip().startswith(PREFIX)


def invalid(why: str) -> ReferenceError:
    return ReferenceError(Outcome(INVALID_SYNTAX, f"{_NOT_RESOLVED} the reference syntax is invalid: {why}."))


def _pairs(body: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in body.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        key = name.strip().lower()
        if not sep or not value.strip():
            raise invalid(f"'{name.strip()[:40]}' has no value")
        if key in pairs:
            raise invalid(f"'{name.strip()[:40]}' appears twice")
        pairs[key] = value.strip()
    return pairs


def _from_uri(uri: str, vault_suffix: str) -> Reference:
    """https://{vault}.{suffix}/secrets/{name}[/{version}][/]: a host outside this platform's vaults
    is a vault the agent never sends the app's token to."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise invalid("SecretUri is not a URL") from exc
    if parts.scheme.lower() != "https" or not parts.hostname or parts.query or parts.fragment:
        raise invalid("SecretUri must be an https URL without query or fragment")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) not in (2, 3) or segments[0].lower() != "secrets":
        raise invalid("SecretUri must look like https://<vault>/secrets/<name>[/<version>]")
    host = parts.hostname.lower() + (f":{port}" if port is not None else "")
    label, _, rest = host.partition(".")
    if not _VAULT_NAME.match(label):
        raise invalid("the vault name in SecretUri must be 3-24 letters, digits or dashes")
    secret = segments[1]
    version = segments[2] if len(segments) == 3 else None
    _check_secret(secret, version)
    if rest != vault_suffix.lower():
        raise ReferenceError(
            Outcome(VAULT_NOT_FOUND, f"{_NOT_RESOLVED} '{host[:100]}' is not a vault of this platform."),
            Reference(label, secret, version),
        )
    return Reference(label, secret, version)


def _check_secret(secret: str, version: str | None) -> None:
    if not _SECRET_NAME.match(secret):
        raise invalid("the secret name must be 1-127 letters, digits or dashes")
    if version is not None and not _VERSION.match(version):
        raise invalid("the secret version must be letters and digits")


def parse(value: str, vault_suffix: str) -> Reference:
    """The reference in an app setting's value (call only when `is_reference`)."""
    text = value.strip()
    if len(text) > MAX_REFERENCE:
        raise invalid(f"a reference is at most {MAX_REFERENCE} characters")
    if not text.endswith(")"):
        raise invalid("a reference ends with ')'")
    pairs = _pairs(text[len(PREFIX) : -1])
    if "secreturi" in pairs:
        if len(pairs) != 1:
            raise invalid("SecretUri stands alone")
        return _from_uri(pairs["secreturi"], vault_suffix)
    if set(pairs) - {"vaultname", "secretname", "secretversion"} or not {"vaultname", "secretname"} <= set(pairs):
        raise invalid("use SecretUri=..., or VaultName=...;SecretName=...[;SecretVersion=...]")
    if not _VAULT_NAME.match(pairs["vaultname"]):
        raise invalid("the vault name must be 3-24 letters, digits or dashes")
    version = pairs.get("secretversion")
    _check_secret(pairs["secretname"], version)
    return Reference(pairs["vaultname"].lower(), pairs["secretname"], version)


def failure(status: str, ref: Reference, why: str = "") -> Outcome:
    """App Service's wording for each status, naming what was looked for (never a value)."""
    detail = {
        MSI_NOT_ENABLED: "the app's Key Vault reference identity is not enabled on it",
        VAULT_NOT_FOUND: f"vault '{ref.vault_name}' could not be found",
        SECRET_NOT_FOUND: f"secret '{ref.secret_name}' could not be found in vault '{ref.vault_name}'",
        SECRET_VERSION_NOT_FOUND: f"version '{ref.secret_version}' of secret '{ref.secret_name}' could not be "
        f"found in vault '{ref.vault_name}'",
        ACCESS_DENIED: f"the app's identity is not allowed to get secret '{ref.secret_name}' from vault "
        f"'{ref.vault_name}'",
        UNAUTHORIZED_CLIENT: f"vault '{ref.vault_name}' did not accept the app identity's token",
        FETCH_TIMED_OUT: f"vault '{ref.vault_name}' did not answer in time",
    }.get(status, "of an error")
    return Outcome(status, f"{_NOT_RESOLVED} {detail}{': ' + why if why else ''}.")


def unexpected(what: str) -> Outcome:
    return Outcome(OTHER_REASONS, f"{_NOT_RESOLVED} of an unexpected {what}.")


def resolved() -> Outcome:
    return Outcome(RESOLVED, "The reference resolves with the app's identity.")


def from_vault_answer(status: int, code: str, ref: Reference) -> Outcome:
    """The vault's refusal (its HTTP status and innermost error code) as a resolve status: the same
    mapping whether the agent read the secret or the control plane checked it."""
    if status == 401:
        return failure(UNAUTHORIZED_CLIENT, ref)
    if status == 403 and code == "SecretDisabled":
        return failure(OTHER_REASONS, ref, "the secret is disabled")
    if status == 403:
        return failure(ACCESS_DENIED, ref)
    if status == 404 and code == "VaultNotFound":
        return failure(VAULT_NOT_FOUND, ref)
    if status == 404:
        return failure(SECRET_VERSION_NOT_FOUND if ref.secret_version else SECRET_NOT_FOUND, ref)
    return failure(OTHER_REASONS, ref, f"the vault answered {status} {code[:60]}".rstrip())


def secret_url(ref: Reference, vault_suffix: str) -> str:
    path = f"/secrets/{ref.secret_name}" + (f"/{ref.secret_version}" if ref.secret_version else "")
    return f"https://{ref.vault_name}.{vault_suffix}{path}?api-version={SECRETS_API}"


def status_document(
    config_id: str,
    setting: str,
    text: str,
    ref: Reference | None,
    outcome: Outcome,
    identity: dict[str, Any],
    location: str,
    active_version: str | None = None,
) -> dict[str, Any]:
    """One ApiKVReference: what `GET …/config/configreferences/appsettings[/{name}]` answers."""
    props: dict[str, Any] = {
        "reference": text,
        "status": outcome.status,
        "vaultName": ref.vault_name if ref else None,
        "secretName": ref.secret_name if ref else None,
        "secretVersion": ref.secret_version if ref else None,
        "identityType": identity,
        "details": outcome.details,
        "source": "KeyVault",
        "activeVersion": active_version,
    }
    return {
        "id": f"{config_id}/{setting}",
        "name": setting,
        "type": "Microsoft.Web/sites/config/configreferences",
        "location": location,
        "properties": props,
    }
