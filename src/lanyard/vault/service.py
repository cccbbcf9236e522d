"""The vault (Key Vault's role): secrets with versions and soft delete, decided per request by the
caller's validated token against the vault's access policies or RBAC.

Unlike the original, which caches authorization for up to a day, every request is decided on the
current policies and role assignments: a change applies to the very next request, on every node.
Vaults, role assignments, decisions and reads are cached per node and invalidated per key by the
change feed (whichever node wrote), with a short TTL as the safety net while the feed is down.
"""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lanyard.authz.evaluate import Assignment, decide
from lanyard.core.cache import FeedCache
from lanyard.core.clock import Clock
from lanyard.core.errors import CryptoError
from lanyard.crypto.barrier import Barrier
from lanyard.observe.metrics import cache_stats
from lanyard.protocol.keyvault import (
    OPERATIONS,
    SecretVersion,
    VaultError,
    attributes_of,
    check_secret_name,
    content_type_of,
    deleted_fields,
    parse_set_body,
    secret_bundle,
    secret_item,
    tags_of,
)
from lanyard.storage import arm_repo, vault_repo
from lanyard.storage.db import Store
from lanyard.storage.feed import ANY, RESET, SEPARATOR, Change

VAULT_TYPE = "Microsoft.KeyVault/vaults"
PAGE = 25
DAY = 86400
CACHE_TTL = 1.0  # authorization may be this stale on a node whose change feed is down, no more
CACHE_SIZE = 50_000
_VAULT_SEGMENT = "/providers/microsoft.keyvault/vaults/"
_SECRET_KINDS = frozenset({"vault_secrets", "vault_secret_versions"})
_Read = tuple[vault_repo.NameRecord, vault_repo.VersionRecord]


@dataclass(frozen=True)
class Vault:
    key: str
    id: str
    name: str
    tenant_id: str
    base_url: str  # https://{name}.vault.{zone}:{port}
    rbac: bool
    policies: tuple[dict[str, Any], ...]
    soft_delete: bool
    retention_days: int
    purge_protection: bool

    @property
    def recovery_level(self) -> str:
        if not self.soft_delete:
            return "Purgeable"
        return "Recoverable" if self.purge_protection else "Recoverable+Purgeable"

    @property
    def days(self) -> int:
        return self.retention_days if self.soft_delete else 0


@dataclass(frozen=True)
class Caller:
    object_id: str
    app_id: str
    tenant_id: str


def vault_from_record(record: arm_repo.ResourceRecord, zone_suffix: str) -> Vault:
    props = record.properties
    policies = tuple(p for p in props.get("accessPolicies") or [] if isinstance(p, dict))
    return Vault(
        key=record.key,
        id=record.id,
        name=record.name,
        tenant_id=str(props.get("tenantId", "")),
        base_url=f"https://{record.name.lower()}.{zone_suffix}",
        rbac=bool(props.get("enableRbacAuthorization", False)),
        policies=policies,
        soft_delete=props.get("enableSoftDelete", True) is not False,
        retention_days=int(props.get("softDeleteRetentionInDays") or 90),
        purge_protection=bool(props.get("enablePurgeProtection", False)),
    )


@dataclass(frozen=True)
class _Effective:
    """A caller's principals (itself and its groups) and the role assignments to any of them."""

    principals: frozenset[str]
    assignments: tuple[Assignment, ...]

    def decide(self, action: str, scope: str) -> bool:
        return decide(self.assignments, self.principals, action, scope, data=True).allowed


class VaultService:
    def __init__(self, store: Store, barrier: Barrier, clock: Clock, zone_suffix: str) -> None:
        self.store = store
        self.barrier = barrier
        self.clock = clock
        self.zone_suffix = zone_suffix  # vault.{zone}:{port}
        self._vaults: FeedCache[str, Vault | None] = FeedCache(CACHE_SIZE, CACHE_TTL, clock, cache_stats("vaults"))
        self._assignments: FeedCache[str, _Effective] = FeedCache(
            CACHE_SIZE, CACHE_TTL, clock, cache_stats("vault_role_assignments")
        )
        self._decisions: FeedCache[tuple[str, str, str], bool] = FeedCache(
            CACHE_SIZE, CACHE_TTL, clock, cache_stats("vault_decisions")
        )
        # (vault key, name key) -> {requested version ("" = latest): (name, version)}
        self._reads: FeedCache[tuple[str, str], Mapping[str, _Read]] = FeedCache(
            CACHE_SIZE, CACHE_TTL, clock, cache_stats("vault_reads")
        )

    # -- following the change feed ------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind == RESET:
                for cache in (self._vaults, self._assignments, self._decisions, self._reads):
                    cache.clear()
            elif change.kind == "resources":
                self._vault_changed(change.key)
            elif change.kind in ("role_assignments", "group_members"):
                # An assignment's principal, or a member whose groups changed: each may be a group
                # that cached callers belong to, so those callers are forgotten too.
                if change.key == ANY:
                    self._assignments.clear()
                    self._decisions.clear()
                else:
                    self._principal_changed(change.key)
            elif change.kind in _SECRET_KINDS:
                if change.key == ANY:
                    self._reads.clear()
                else:
                    vault_key, _, name_key = change.key.partition(SEPARATOR)
                    self._reads.invalidate((vault_key, name_key))

    def _principal_changed(self, principal: str) -> None:
        affected = {principal}

        def holds(caller: str, effective: _Effective) -> bool:
            if principal in effective.principals:
                affected.add(caller)
                return True
            return False

        self._assignments.invalidate_entries(holds)
        self._assignments.invalidate(principal)
        self._decisions.invalidate_where(lambda k: k[0] in affected)

    def _vault_changed(self, key: str) -> None:
        if key == ANY:
            self._vaults.clear()
            return
        at = key.rfind(_VAULT_SEGMENT)
        if at >= 0:
            self._vaults.invalidate(key[at + len(_VAULT_SEGMENT) :].split("/", 1)[0])

    # -- lookups --------------------------------------------------------------------------------

    def vault(self, name: str) -> Vault | None:
        name = name.lower()

        def load() -> Vault | None:
            with self.store.session() as s:
                found = arm_repo.resources_named(s, VAULT_TYPE, name)
            return vault_from_record(found[0], self.zone_suffix) if found else None

        return self._vaults.load(name, load)

    def _assignments_of(self, object_id: str) -> _Effective:
        def load() -> _Effective:
            with self.store.session() as s:
                principals, records = arm_repo.assignments_for_caller(s, object_id)
            return _Effective(
                principals, tuple(Assignment(a.scope, a.role_definition_id, a.principal_id) for a in records)
            )

        return self._assignments.load(object_id, load)

    # -- authorization ------------------------------------------------------------------------

    def _rbac_allows(self, object_id: str, action: str, scope: str) -> bool:
        return self._decisions.load(
            (object_id, action, scope.lower()),
            lambda: self._assignments_of(object_id).decide(action, scope),
        )

    def _assignments_cached(self, object_id: str) -> bool:
        return object_id in self._assignments

    def authorize(self, vault: Vault, caller: Caller, operation: str, secret: str | None = None) -> None:
        op = OPERATIONS[operation]
        who = f"appid={caller.app_id};oid={caller.object_id}"
        if caller.tenant_id != vault.tenant_id:
            raise VaultError(
                401, "Unauthorized", "AKV10032: Invalid issuer: the token's tenant is not the vault's tenant."
            )
        if vault.rbac:
            scope = f"{vault.id}/secrets/{secret}" if secret else vault.id
            if not self._rbac_allows(caller.object_id, op.data_action, scope):
                raise VaultError(
                    403,
                    "Forbidden",
                    f"Caller is not authorized to perform action on resource. If role "
                    f"assignments were recently changed, they apply now; check them. Caller: {who}; "
                    f"Action: '{op.data_action}'; Resource: '{scope.lower()}'; Vault: {vault.name}.",
                    "ForbiddenByRbac",
                )
            return
        # A policy for a group applies to its members, as in Key Vault.
        principals = self._assignments_of(caller.object_id).principals if vault.policies else frozenset()
        for policy in vault.policies:
            if (
                str(policy.get("objectId", "")).lower() in principals
                and str(policy.get("tenantId", "")).lower() == caller.tenant_id
            ):
                granted = {str(p).lower() for p in (policy.get("permissions") or {}).get("secrets") or []}
                if op.permission in granted or "all" in granted:
                    return
        raise VaultError(
            403,
            "Forbidden",
            f"The user, group or application '{who}' does not have secrets "
            f"{op.permission} permission on key vault '{vault.name}'. To enable access, add an access "
            "policy granting this permission.",
            "AccessDenied",
        )

    # -- helpers ------------------------------------------------------------------------------

    def _context(self, vault: Vault, name_key: str, version: str) -> str:
        return f"secret:{vault.key}:{name_key}:{version}"

    def _version(self, vault: Vault, name: str, v: vault_repo.VersionRecord, *, with_value: bool) -> SecretVersion:
        value = None
        if with_value:
            try:
                value = self.barrier.open(v.sealed_value, context=self._context(vault, v.name_key, v.version)).decode()
            except CryptoError as exc:
                raise VaultError(500, "InternalError", "The secret value could not be decrypted.") from exc
        return SecretVersion(
            name,
            v.version,
            value,
            v.content_type,
            v.tags,
            v.enabled,
            v.not_before,
            v.expires,
            int(v.created),
            int(v.updated),
        )

    def _live_name(self, s: Any, vault: Vault, name: str) -> vault_repo.NameRecord:
        record = vault_repo.get_name(s, vault.key, check_secret_name(name).lower())
        if record is None or record.deleted_at is not None:
            raise VaultError(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. "
                "If you recently deleted this secret you may be able to recover it using the correct "
                "recovery command.",
            )
        return record

    def _latest(self, s: Any, vault: Vault, record: vault_repo.NameRecord) -> vault_repo.VersionRecord:
        found = vault_repo.latest_version(s, vault.key, record.name_key)
        if found is None:
            raise VaultError(404, "SecretNotFound", f"A secret with (name/id) {record.name} was not found.")
        return found

    def _bundle(
        self, vault: Vault, s: Any, record: vault_repo.NameRecord, v: vault_repo.VersionRecord, *, with_value: bool
    ) -> dict[str, Any]:
        version = self._version(vault, record.name, v, with_value=with_value)
        return secret_bundle(vault.base_url, version, vault.recovery_level, vault.days, with_value=with_value)

    # -- operations ---------------------------------------------------------------------------

    def set(self, vault: Vault, caller: Caller, name: str, body: Any) -> dict[str, Any]:
        check_secret_name(name)
        self.authorize(vault, caller, "set", name)
        value, content_type, tags, attrs = parse_set_body(body)
        now = self.clock.now()
        name_key = name.lower()
        version = pysecrets.token_hex(16)
        with self.store.session() as s:
            existing = self._purge_if_due(s, vault, vault_repo.get_name(s, vault.key, name_key))
            if existing is not None and existing.deleted_at is not None:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, "
                    "and its name cannot be reused; in this state, the secret can only be recovered or "
                    "purged.",
                )
            vault_repo.put_name(s, vault.key, name_key, existing.name if existing else name)
            record = vault_repo.VersionRecord(
                name_key,
                version,
                self.barrier.seal(value.encode(), context=self._context(vault, name_key, version)),
                content_type,
                tags,
                attrs.get("enabled", True),
                attrs.get("nbf"),
                attrs.get("exp"),
                now,
                now,
            )
            vault_repo.add_version(s, vault.key, record)
            named = vault_repo.get_name(s, vault.key, name_key)
            assert named is not None
            return self._bundle(vault, s, named, record, with_value=True)

    def get(self, vault: Vault, caller: Caller, name: str, version: str | None) -> dict[str, Any]:
        self.authorize(vault, caller, "get", name)
        epoch = self._reads.epoch()
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            v = self._find_version(s, vault, record, version)
        key = (vault.key, record.name_key)
        known = self._reads.get(key) or {}
        self._reads.put(key, {**known, (version or "").lower(): (record, v)}, epoch)
        return self._readable(vault, record, v)

    def locate(self, vault: Vault, caller: Caller, name: str, version: str | None) -> str:
        """The version a read would return, decided as a read but never decrypted: what a Key Vault
        reference's status reports (vault/references.py)."""
        self.authorize(vault, caller, "get", name)
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            v = self._find_version(s, vault, record, version)
        if not v.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return v.version

    def _readable(self, vault: Vault, record: vault_repo.NameRecord, v: vault_repo.VersionRecord) -> dict[str, Any]:
        if not v.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        version = self._version(vault, record.name, v, with_value=True)
        return secret_bundle(vault.base_url, version, vault.recovery_level, vault.days, with_value=True)

    def cached_get(self, vault: Vault, caller: Caller, name: str, version: str | None) -> dict[str, Any] | None:
        """A read served from memory, or None when it needs storage (then call `get` off the event loop).
        The value is still decrypted on every read; only storage round-trips are saved."""
        versions = self._reads.get((vault.key, name.lower()))
        entry = versions.get((version or "").lower()) if versions is not None else None
        if entry is None:
            return None
        if not self._assignments_cached(caller.object_id):
            return None
        self.authorize(vault, caller, "get", name)
        return self._readable(vault, entry[0], entry[1])

    def _find_version(
        self, s: Any, vault: Vault, record: vault_repo.NameRecord, version: str | None
    ) -> vault_repo.VersionRecord:
        if not version:
            return self._latest(s, vault, record)
        found = vault_repo.get_version(s, vault.key, record.name_key, version.lower())
        if found is None:
            raise VaultError(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {record.name}/{version[:40]} was not found in this key vault.",
            )
        return found

    def update(self, vault: Vault, caller: Caller, name: str, version: str | None, body: Any) -> dict[str, Any]:
        self.authorize(vault, caller, "update", name)
        if not isinstance(body, dict):
            raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
        content_type, tags, attrs = content_type_of(body), tags_of(body), attributes_of(body)
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            v = self._find_version(s, vault, record, version)
            vault_repo.update_version(
                s,
                vault.key,
                record.name_key,
                v.version,
                content_type=content_type if "contentType" in body else v.content_type,
                tags=tags if "tags" in body else v.tags,
                enabled=attrs.get("enabled", v.enabled),
                not_before=attrs.get("nbf", v.not_before),
                expires=attrs.get("exp", v.expires),
                updated=self.clock.now(),
            )
            fresh = vault_repo.get_version(s, vault.key, record.name_key, v.version)
            assert fresh is not None
            return self._bundle(vault, s, record, fresh, with_value=False)

    def list_secrets(self, vault: Vault, caller: Caller, skip: int, top: int) -> tuple[list[dict[str, Any]], bool]:
        self.authorize(vault, caller, "list")
        with self.store.session() as s:
            names = vault_repo.names(s, vault.key, deleted=False)
            page = names[skip : skip + top]
            items = [
                secret_item(
                    vault.base_url,
                    self._version(vault, n.name, self._latest(s, vault, n), with_value=False),
                    vault.recovery_level,
                    vault.days,
                )
                for n in page
            ]
        return items, skip + top < len(names)

    def list_versions(
        self, vault: Vault, caller: Caller, name: str, skip: int, top: int
    ) -> tuple[list[dict[str, Any]], bool]:
        self.authorize(vault, caller, "list", name)
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            found = vault_repo.versions(s, vault.key, record.name_key)
            page = found[skip : skip + top]
            items = [
                secret_item(
                    vault.base_url,
                    self._version(vault, record.name, v, with_value=False),
                    vault.recovery_level,
                    vault.days,
                    versioned=True,
                )
                for v in page
            ]
        return items, skip + top < len(found)

    def delete(self, vault: Vault, caller: Caller, name: str) -> dict[str, Any]:
        self.authorize(vault, caller, "delete", name)
        now = self.clock.now()
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            latest = self._latest(s, vault, record)
            body = self._bundle(vault, s, record, latest, with_value=False)
            if vault.soft_delete:
                purge_at = now + vault.retention_days * DAY
                vault_repo.mark_deleted(s, vault.key, record.name_key, now, purge_at)
                body.update(deleted_fields(vault.base_url, record.name, int(now), int(purge_at)))
            else:
                vault_repo.purge(s, vault.key, record.name_key)
        return body

    def _purge_if_due(self, s: Any, vault: Vault, record: vault_repo.NameRecord | None) -> vault_repo.NameRecord | None:
        """A soft-deleted secret past its scheduled purge date is gone, as if the service had purged it."""
        if record is not None and record.purge_at is not None and record.purge_at <= self.clock.now():
            vault_repo.purge(s, vault.key, record.name_key)
            return None
        return record

    def _deleted_name(self, s: Any, vault: Vault, name: str) -> vault_repo.NameRecord:
        record = self._purge_if_due(s, vault, vault_repo.get_name(s, vault.key, check_secret_name(name).lower()))
        if record is None or record.deleted_at is None:
            raise VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return record

    def get_deleted(self, vault: Vault, caller: Caller, name: str) -> dict[str, Any]:
        self.authorize(vault, caller, "get_deleted", name)
        with self.store.session() as s:
            record = self._deleted_name(s, vault, name)
            body = self._bundle(vault, s, record, self._latest(s, vault, record), with_value=False)
            assert record.deleted_at is not None and record.purge_at is not None
            body.update(deleted_fields(vault.base_url, record.name, int(record.deleted_at), int(record.purge_at)))
            return body

    def list_deleted(self, vault: Vault, caller: Caller, skip: int, top: int) -> tuple[list[dict[str, Any]], bool]:
        self.authorize(vault, caller, "list")
        with self.store.session() as s:
            names = [n for n in vault_repo.names(s, vault.key, deleted=True) if self._purge_if_due(s, vault, n)]
            items = []
            for n in names[skip : skip + top]:
                item = secret_item(
                    vault.base_url,
                    self._version(vault, n.name, self._latest(s, vault, n), with_value=False),
                    vault.recovery_level,
                    vault.days,
                )
                assert n.deleted_at is not None and n.purge_at is not None
                item.update(deleted_fields(vault.base_url, n.name, int(n.deleted_at), int(n.purge_at)))
                items.append(item)
        return items, skip + top < len(names)

    def purge(self, vault: Vault, caller: Caller, name: str) -> None:
        self.authorize(vault, caller, "purge", name)
        if vault.purge_protection:
            raise VaultError(
                403,
                "Forbidden",
                "Operation 'purge' is not allowed because purge protection is enabled for this vault.",
                "PurgeProtected",
            )
        with self.store.session() as s:
            record = self._deleted_name(s, vault, name)
            vault_repo.purge(s, vault.key, record.name_key)

    def recover(self, vault: Vault, caller: Caller, name: str) -> dict[str, Any]:
        self.authorize(vault, caller, "recover", name)
        with self.store.session() as s:
            record = self._deleted_name(s, vault, name)
            vault_repo.mark_deleted(s, vault.key, record.name_key, None, None)
            return self._bundle(vault, s, record, self._latest(s, vault, record), with_value=False)

    # -- backup and restore: every version, sealed for this platform only ----------------------

    def backup(self, vault: Vault, caller: Caller, name: str) -> dict[str, Any]:
        self.authorize(vault, caller, "backup", name)
        with self.store.session() as s:
            record = self._live_name(s, vault, name)
            versions = [
                {
                    "version": v.version,
                    "value": self._version(vault, record.name, v, with_value=True).value,
                    "contentType": v.content_type,
                    "tags": v.tags,
                    "enabled": v.enabled,
                    "nbf": v.not_before,
                    "exp": v.expires,
                    "created": v.created,
                    "updated": v.updated,
                }
                for v in vault_repo.versions(s, vault.key, record.name_key)
            ]
        blob = self.barrier.seal(
            orjson.dumps({"name": record.name, "versions": versions}), context=f"secret-backup:{vault.tenant_id}"
        )
        return {"value": base64.urlsafe_b64encode(blob).rstrip(b"=").decode()}

    def restore(self, vault: Vault, caller: Caller, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise VaultError(400, "BadParameter", "Property 'value' (the backup blob) is required.")
        try:
            raw = base64.urlsafe_b64decode(body["value"] + "=" * (-len(body["value"]) % 4))
            doc = orjson.loads(self.barrier.open(raw, context=f"secret-backup:{vault.tenant_id}"))
        except (ValueError, CryptoError) as exc:
            raise VaultError(
                400, "BadParameter", "The backup blob is corrupt or was not made by this platform for this tenant."
            ) from exc
        name = check_secret_name(str(doc["name"]))
        self.authorize(vault, caller, "restore", name)
        name_key = name.lower()
        with self.store.session() as s:
            if self._purge_if_due(s, vault, vault_repo.get_name(s, vault.key, name_key)) is not None:
                raise VaultError(
                    409, "Conflict", f"Secret {name} already exists (or is deleted but recoverable) in this vault."
                )
            vault_repo.put_name(s, vault.key, name_key, name)
            for v in doc["versions"]:
                vault_repo.add_version(
                    s,
                    vault.key,
                    vault_repo.VersionRecord(
                        name_key,
                        v["version"],
                        self.barrier.seal(v["value"].encode(), context=self._context(vault, name_key, v["version"])),
                        v["contentType"],
                        v["tags"],
                        v["enabled"],
                        v["nbf"],
                        v["exp"],
                        v["created"],
                        v["updated"],
                    ),
                )
            record = vault_repo.get_name(s, vault.key, name_key)
            assert record is not None
            return self._bundle(vault, s, record, self._latest(s, vault, record), with_value=False)
