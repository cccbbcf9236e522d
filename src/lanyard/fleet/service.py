"""The server side of host agents: joining, placements, and the bindings each agent may act on.

The threat this encodes (docs/security.md §1.4): a compromised agent can mint tokens only for identities
of workloads placed on *its* host. Placement is an operator action checked by RBAC on the workload;
an agent can read its bindings but never change them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from lanyard.arm.service import Caller, ControlPlane
from lanyard.audit.record import Event
from lanyard.audit.writer import NULL_AUDITOR, Auditor
from lanyard.core.clock import Clock
from lanyard.core.errors import ArmError, GraphError
from lanyard.directory.keys import PUBLISHED_STATES
from lanyard.directory.service import Directory, iso
from lanyard.directory.workload_issuer import projected_claims
from lanyard.protocol.arm import bad_request, not_found, parse_path, resource_key
from lanyard.storage import arm_repo, feed, fleet_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage.db import Store

log = logging.getLogger("lanyard.fleet")
AGENT_AUDIENCE = "api://lanyard-host-agent"
JOIN_TOKEN_TTL = 3600.0
HOST_CERT_GRACE = 300.0  # a renewed host's old certificate works this much longer
PLACEABLE = frozenset({"microsoft.web/sites", "microsoft.web/sites/slots", "microsoft.compute/virtualmachines"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ATTESTATION_TAG = "lanyard.callerAttestation"


def caller_attestation(tags: dict[str, str] | None) -> str:
    """Strict unless the resource's owner opted into Azure's header-only check with a tag."""
    value = (tags or {}).get(ATTESTATION_TAG, "")
    return "header" if value.strip().lower() == "header" else "strict"


@dataclass(frozen=True)
class Bindings:
    generation: int
    etag: str
    body: bytes


class Fleet:
    def __init__(self, store: Store, directory: Directory, control: ControlPlane, clock: Clock, tenant_id: str) -> None:
        self.store = store
        self.directory = directory
        self.control = control
        self.clock = clock
        self.tenant_id = tenant_id
        self.audit: Auditor = NULL_AUDITOR
        # Projected tokens of AKS-style runs (LANYARD_WORKLOAD_TOKEN_LIFETIME).
        self.workload_token_lifetime = 3600

    # -- joining ------------------------------------------------------------------------------

    def create_join_token(self, caller: Caller | None, host_name: str | None, ttl: float = JOIN_TOKEN_TTL) -> str:
        token = "lyj_" + secrets.token_urlsafe(32)
        with self.store.session() as s:
            if caller is not None:
                self.control.authorize(s, caller, "Lanyard/hosts/write", self._subscription_scope(s))
            fleet_repo.add_join_token(
                s, hash_token(token), host_name, self.clock.now() + ttl, caller.object_id if caller else None
            )
        self.audit.eventually(
            Event(
                "credential.host.join_token",
                principal=caller.object_id if caller else None,
                app_id=caller.app_id if caller else None,
                detail={"name": host_name, "ttl": ttl},
            )
        )
        return token

    def _subscription_scope(self, s: Any) -> str:
        subs = dirrepo.list_subscriptions(s, self.tenant_id)
        return f"/subscriptions/{subs[0].id}"

    def join(self, token: object, name: object, cert_b64: object) -> dict[str, Any]:
        if not isinstance(token, str) or not isinstance(name, str) or not isinstance(cert_b64, str):
            raise bad_request("token, name and certificate are required strings.", "InvalidRequestContent")
        if not 1 <= len(name) <= 128:
            raise bad_request("name must be 1 to 128 characters.", "InvalidRequestContent")
        try:
            der = base64.b64decode(cert_b64, validate=True)
        except ValueError as exc:
            raise bad_request("certificate must be base64 DER.", "InvalidRequestContent") from exc
        with self.store.session() as s:
            used = fleet_repo.use_join_token(s, hash_token(token), self.clock.now())
            if used is None:
                raise ArmError(
                    "The join token is unknown, expired or already used.", code="InvalidJoinToken", status=401
                )
            try:
                principal = self.directory.add_host_principal(s, self.tenant_id, name, der)
            except Exception as exc:  # a bad certificate: refuse the join, keep nothing
                raise bad_request(
                    f"The certificate was refused: {getattr(exc, 'message', 'invalid')}", "InvalidCertificate"
                ) from exc
            host = fleet_repo.add_host(s, str(uuid.uuid4()), name, principal.object_id, self.clock.now())
        self.audit.record_sync(
            Event(
                "credential.host.join",
                principal=principal.object_id,
                app_id=principal.app_id,
                host=host.id,
                detail={"name": name},
            )
        )
        return {
            "hostId": host.id,
            "clientId": principal.app_id,
            "objectId": principal.object_id,
            "tenantId": self.tenant_id,
            "name": host.name,
        }

    def renew_host_credential(self, host: fleet_repo.HostRecord, cert_b64: object) -> dict[str, Any]:
        """Register a host's renewed certificate; its older ones keep working HOST_CERT_GRACE more
        seconds (calls in flight), then are refused."""
        if not isinstance(cert_b64, str):
            raise bad_request("certificate is a required string.", "InvalidRequestContent")
        try:
            der = base64.b64decode(cert_b64, validate=True)
        except ValueError as exc:
            raise bad_request("certificate must be base64 DER.", "InvalidRequestContent") from exc
        now = self.clock.now()
        with self.store.session() as s:
            principal = dirrepo.get_principal(s, object_id=host.principal_id)
            if principal is None:
                raise ArmError("The caller is not a registered host.", code="AuthorizationFailed", status=403)
            try:
                record = self.directory.add_certificate(
                    s, principal.app_id, der, display_name=f"host agent {host.name}"
                )
            except GraphError as exc:
                raise bad_request(f"The certificate was refused: {exc.message}", "InvalidCertificate") from exc
            if record.end_at <= now:
                raise bad_request("The certificate has already expired.", "InvalidCertificate")
            dirrepo.end_certificates(s, principal.app_id, keep=record.key_id, end_at=now + HOST_CERT_GRACE)
        self.audit.record_sync(
            Event(
                "credential.host.renew",
                principal=principal.object_id,
                app_id=principal.app_id,
                host=host.id,
                detail={"key_id": record.key_id},
            )
        )
        return {"hostId": host.id, "keyId": record.key_id, "endDateTime": record.end_at}

    def workload_token(self, host: fleet_repo.HostRecord, resource_id: object) -> dict[str, Any]:
        """A projected service-account token for a workload placed on this host (AKS-style runs).
        Its subject is derived from the workload (system:serviceaccount:<group>:<name>), never asked
        for: a host may only speak for the workloads it runs, under their own names."""
        if not isinstance(resource_id, str) or not resource_id:
            raise bad_request("resourceId is required.", "InvalidRequestContent")
        with self.store.session() as s:
            record = self._placeable(s, resource_id)
            if record.key not in fleet_repo.placements_for_host(s, host.id):
                raise ArmError("The workload is not placed on this host.", code="AuthorizationFailed", status=403)
        ref = parse_path(record.id).resource
        assert ref is not None and ref.resource_group is not None
        issuer = self.directory.workload_issuer(self.tenant_id)
        name = "-".join(ref.names).lower()
        claims = projected_claims(
            issuer, ref.resource_group.lower(), name, record.id, self.clock.now(), self.workload_token_lifetime
        )
        return {
            "token": self.directory.keys.signer.sign(claims),
            "expiresOn": claims["exp"],
            "issuer": issuer,
            "subject": claims["sub"],
        }

    def host_for_principal(self, principal_id: str) -> fleet_repo.HostRecord | None:
        with self.store.session() as s:
            return fleet_repo.host_by_principal(s, principal_id)

    # -- placements ---------------------------------------------------------------------------

    def _placeable(self, s: Any, resource_id: str) -> arm_repo.ResourceRecord:
        parsed = parse_path(resource_id)
        if parsed.kind != "resource" or parsed.resource is None or parsed.resource.is_collection:
            raise bad_request("resourceId must be the id of a site, slot or virtual machine.", "InvalidResourceId")
        record = arm_repo.get_resource(s, resource_key(resource_id))
        if record is None:
            raise not_found(f"The resource '{resource_id[:200]}' was not found.")
        if record.type.lower() not in PLACEABLE:
            raise bad_request(f"Resources of type {record.type} cannot be placed on a host.", "InvalidResourceType")
        return record

    def place(self, caller: Caller, host_id: str, resource_id: str, *, remove: bool = False) -> dict[str, Any]:
        with self.store.session() as s:
            host = fleet_repo.get_host(s, host_id.lower())
            if host is None:
                raise not_found(f"The host '{host_id[:40]}' was not found.", "HostNotFound")
            record = self._placeable(s, resource_id)
            # Placing a workload hands its identities to the host: it takes write access to the workload
            # and, for each user-assigned identity on it, the right to assign that identity.
            self.control.authorize(s, caller, f"{record.type}/write", record.id)
            if not remove:
                for uai_key in record.user_identity_keys:
                    uai = arm_repo.get_resource(s, uai_key)
                    if uai is not None:
                        self.control.authorize(
                            s, caller, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", uai.id
                        )
            if remove:
                if fleet_repo.unplace(s, host.id, record.key):
                    self.control.revoke_workload_identities(s, record)
            else:
                fleet_repo.place(s, host.id, record.key, self.clock.now())
        return {"hostId": host.id, "resourceId": record.id, "placed": not remove}

    def revoke_host(self, caller: Caller, id_or_name: str) -> dict[str, Any]:
        """A host leaves the platform at once (`lanyard host revoke|delete`): its agent's next call is
        refused (no host record, no credential), its placements go, and every identity it held gets
        a new platform key, so the keys on that machine stop working at the token endpoint."""
        with self.store.session() as s:
            self.control.authorize(s, caller, "Lanyard/hosts/delete", self._subscription_scope(s))
            found = fleet_repo.find_host(s, id_or_name)
            if not found:
                raise not_found(f"The host '{id_or_name[:128]}' was not found.", "HostNotFound")
            if len(found) > 1:
                raise bad_request(
                    f"{len(found)} hosts are named '{id_or_name[:128]}': give the host id.", "AmbiguousHostName"
                )
            host = found[0]
            placed = fleet_repo.placements_for_host(s, host.id)
            for key in placed:
                record = arm_repo.get_resource(s, key)
                if record is not None:
                    self.control.revoke_workload_identities(s, record)
            fleet_repo.delete_host(s, host.id)
            dirrepo.delete_principal(s, host.principal_id)
        self.audit.record_sync(
            Event(
                "credential.host.revoke",
                principal=caller.object_id,
                app_id=caller.app_id,
                host=host.id,
                detail={"name": host.name, "placements_removed": len(placed)},
            )
        )
        return {"hostId": host.id, "name": host.name, "revoked": True, "placementsRemoved": len(placed)}

    def list_hosts(self, caller: Caller) -> list[dict[str, Any]]:
        with self.store.session() as s:
            self.control.authorize(s, caller, "Lanyard/hosts/read", self._subscription_scope(s))
            return [
                {
                    "hostId": h.id,
                    "name": h.name,
                    "principalId": h.principal_id,
                    "joinedAt": iso(h.created_at),
                    "credentialExpiresOn": self._credential_end(s, h.principal_id),
                    "placements": [self._id_of(s, k) for k in fleet_repo.placements_for_host(s, h.id)],
                }
                for h in fleet_repo.list_hosts(s)
            ]

    @staticmethod
    def _credential_end(s: Any, principal_id: str) -> str | None:
        """When the host's newest credential (its certificate) ends: it renews itself before then."""
        principal = dirrepo.get_principal(s, object_id=principal_id)
        ends = [c.end_at for c in dirrepo.list_credentials(s, principal.app_id)] if principal is not None else []
        return iso(max(ends)) if ends else None

    @staticmethod
    def _id_of(s: Any, key: str) -> str:
        record = arm_repo.get_resource(s, key)
        return record.id if record else key

    # -- bindings -----------------------------------------------------------------------------

    def _identity(self, s: Any, principal: dirrepo.PrincipalRecord, kind: str) -> dict[str, Any] | None:
        credential = self.directory.identity_credential(s, principal)
        if credential is None:
            # Credentials are made on write paths only (never here, where two nodes could each make
            # one); an identity without one is left out until one exists.
            log.warning("identity %s has no usable platform credential; not bound", principal.object_id)
            return None
        cert, key = credential
        return {
            "kind": kind,
            "objectId": principal.object_id,
            "clientId": principal.app_id,
            "resourceId": principal.resource_id,
            "certificate": cert,
            "privateKey": key,
        }

    def bindings(self, host_id: str) -> Bindings:
        """Everything the host's agent may act on, with a digest so unchanged states are cheap.
        Its generation is the newest change id read before the bindings themselves, so they reflect
        at least every change up to it (straight from storage: no cache in between)."""
        workloads = []
        with self.store.session() as s:
            generation = feed.newest(s)
            for key in fleet_repo.placements_for_host(s, host_id):
                record = arm_repo.get_resource(s, key)
                if record is None:
                    continue
                identities = []
                if record.system_principal_id:
                    sp = dirrepo.get_principal(s, object_id=record.system_principal_id)
                    bound = self._identity(s, sp, "system") if sp is not None else None
                    if bound is not None:
                        identities.append(bound)
                for uai_key in record.user_identity_keys:
                    uai = arm_repo.get_resource(s, uai_key)
                    principal_id = uai.properties.get("principalId") if uai else None
                    sp = dirrepo.get_principal(s, object_id=str(principal_id)) if principal_id else None
                    bound = self._identity(s, sp, "user") if sp is not None else None
                    if bound is not None:
                        identities.append(bound)
                workloads.append(
                    {
                        "resourceId": record.id,
                        "type": record.type,
                        "kind": record.kind,
                        "name": record.name,
                        "identities": identities,
                        "callerAttestation": caller_attestation(record.tags),
                    }
                )
            # The published signing keys: an agent drops cached tokens signed by any other (revoked).
            published = dirrepo.signing_kids(s, PUBLISHED_STATES)
        doc = {"hostId": host_id, "tenantId": self.tenant_id, "workloads": workloads, "signingKeys": published}
        etag = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        body = orjson.dumps({**doc, "generation": generation, "etag": etag})
        return Bindings(generation, etag, body)
