"""The status of each Key Vault reference in an app's settings, as App Service reports them at
`GET …/sites/{name}/config/configreferences/appsettings[/{setting}]`.

The control plane computes them, from the current access policies, role assignments and secrets,
with the vault's own decisions (VaultService.authorize and locate) for the identity the agent would
use: the answer is what the app's next start gets, on whichever node is asked. No value is ever
decrypted here (docs/keyvault-references.md).
"""

from __future__ import annotations

from typing import Any

from lanyard.protocol import kvref
from lanyard.protocol.arm import ResourceRef, resource_key
from lanyard.protocol.keyvault import VaultError
from lanyard.storage import arm_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.vault.service import Caller, VaultService

IDENTITY_PROPERTY = "keyVaultReferenceIdentity"


def is_config_references(ref: ResourceRef) -> bool:
    """…/config/configreferences/appsettings[/{setting}]: types end config/appsettings, the config is named
    configreferences."""
    count = len(ref.types)
    return (
        count >= 3
        and [t.lower() for t in ref.types[-2:]] == ["config", "appsettings"]
        and ref.names[count - 2].lower() == "configreferences"
    )


class ReferenceStatuses:
    def __init__(self, vaults: VaultService, tenant_id: str) -> None:
        self.vaults = vaults
        self.tenant_id = tenant_id

    def _identity(self, s: Any, site: arm_repo.ResourceRecord) -> tuple[Caller | None, dict[str, Any]]:
        """The identity references use: system-assigned unless keyVaultReferenceIdentity names a UAI."""
        chosen = str(site.properties.get(IDENTITY_PROPERTY) or "SystemAssigned")
        principal_id: str | None = None
        if chosen.lower() == "systemassigned":
            shape: dict[str, Any] = {"type": "SystemAssigned"}
            principal_id = site.system_principal_id
        else:
            shape = {"type": "UserAssigned", "userAssignedIdentities": {chosen: {}}}
            key = resource_key(chosen)
            uai = arm_repo.get_resource(s, key) if key in site.user_identity_keys else None
            if uai is not None:
                principal_id = str(uai.properties.get("principalId") or "") or None
        principal = dirrepo.get_principal(s, object_id=principal_id) if principal_id else None
        if principal is None:
            return None, shape
        return Caller(principal.object_id, principal.app_id, self.tenant_id), shape

    def _outcome(self, caller: Caller | None, text: str) -> tuple[kvref.Reference | None, kvref.Outcome, str | None]:
        try:
            ref = kvref.parse(text, self.vaults.zone_suffix)
        except kvref.ReferenceError as exc:
            return exc.partial, exc.outcome, None
        if caller is None:
            return ref, kvref.failure(kvref.MSI_NOT_ENABLED, ref), None
        vault = self.vaults.vault(ref.vault_name)
        if vault is None:
            return ref, kvref.failure(kvref.VAULT_NOT_FOUND, ref), None
        try:
            version = self.vaults.locate(vault, caller, ref.secret_name, ref.secret_version)
        except VaultError as exc:
            return ref, kvref.from_vault_answer(exc.status, exc.inner or exc.code, ref), None
        return ref, kvref.resolved(), version

    def documents(self, s: Any, site: arm_repo.ResourceRecord, settings: dict[str, str]) -> list[dict[str, Any]]:
        """One ApiKVReference per setting whose value is a reference, in setting-name order."""
        caller, shape = self._identity(s, site)
        config_id = f"{site.id}/config/configreferences/appsettings"
        out = []
        for name in sorted(settings):
            text = settings[name]
            if not kvref.is_reference(text):
                continue
            ref, outcome, version = self._outcome(caller, text)
            out.append(kvref.status_document(config_id, name, text, ref, outcome, shape, site.location, version))
        return out
