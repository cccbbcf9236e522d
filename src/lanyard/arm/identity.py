"""Microsoft.ManagedIdentity/userAssignedIdentities at the control plane: the service principal an identity
is (made with it, dropped with it), its detachment from every app when it goes, and its federated
identity credentials (arm/federated.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lanyard.arm.federated import is_federated_path
from lanyard.arm.hooks import Host, ProviderHooks, Reply, SubRequest, WriteRequest
from lanyard.storage import arm_repo as repo
from lanyard.storage import federation_repo

UAI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"


def ensure_principal(record: repo.ResourceRecord, write: WriteRequest) -> repo.ResourceRecord:
    """An identity is its service principal: made on the first write, kept by every later one."""
    if record.properties.get("principalId"):
        return record
    host = write.host
    sp = host.principals.create_managed_identity(write.session, host.tenant_id, write.ref.name, write.ref.id)
    props = {
        **record.properties,
        "principalId": sp.object_id,
        "clientId": sp.app_id,
        "tenantId": host.tenant_id,
        "isolationScope": "None",
    }
    return replace(record, properties=props)


def delete_identity(host: Host, s: Any, record: repo.ResourceRecord) -> None:
    # Detach it everywhere in the same transaction: no app is left pointing at a deleted identity.
    for user_key in repo.users_of_identity(s, record.key):
        user = repo.get_resource(s, user_key)
        if user is None:
            continue
        remaining = tuple(k for k in user.user_identity_keys if k != record.key)
        kinds = (["SystemAssigned"] if user.system_principal_id else []) + (["UserAssigned"] if remaining else [])
        repo.save_resource(s, replace(user, user_identity_keys=remaining, identity_type=", ".join(kinds) or "None"))
    principal_id = record.properties.get("principalId")
    if principal_id:
        host.drop_principal(s, str(principal_id))
    federation_repo.delete_for_owner(s, record.key)


def federated_credentials(request: SubRequest) -> Reply | None:
    if not is_federated_path(request.ref):
        return None
    return request.host.federated.handle(
        request.session, request.method, request.ref, request.body, request.query, request.caller
    )


IDENTITY_HOOKS = ProviderHooks(
    on_write=ensure_principal,
    on_delete=delete_identity,
    routes=(("federatedidentitycredentials", federated_credentials),),
)
