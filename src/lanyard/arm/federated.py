"""Microsoft.ManagedIdentity/userAssignedIdentities/{name}/federatedIdentityCredentials/{name}:
who outside may sign in as the identity (docs/federation.md), shaped as ARM returns them.

Stored in the federated_credentials table (one row per credential, keyed on the change feed by
the identity's client id), not as generic child resources: the token endpoint reads them by
client id on every federated sign-in.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from lanyard.core.errors import ArmError
from lanyard.protocol.arm import ResourceRef, bad_request, not_found, resource_key
from lanyard.protocol.federation import NAME, RuleError, check_spec
from lanyard.storage import arm_repo as repo
from lanyard.storage import federation_repo as fedrepo

if TYPE_CHECKING:
    from lanyard.arm.service import Caller, ControlPlane, Reply

FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
API_VERSIONS = frozenset({"2022-01-31-preview", "2023-01-31", "2023-07-31-preview", "2024-11-30", "2025-01-31-preview"})
# The flexible federated identity credential preview: claimsMatchingExpression instead of subject.
FLEXIBLE_VERSIONS = frozenset({"2023-07-31-preview", "2025-01-31-preview"})
_VERBS = {"GET": "read", "PUT": "write", "DELETE": "delete"}


def is_federated_path(ref: ResourceRef) -> bool:
    return (
        ref.parent is not None
        and ref.types[-1].lower() == "federatedidentitycredentials"
        and ref.parent.full_type.lower() == "microsoft.managedidentity/userassignedidentities"
        and len(ref.types) == 2
    )


class FederatedCredentials:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def json(self, identity_id: str, record: fedrepo.FederatedRecord, api_version: str) -> dict[str, Any]:
        from lanyard.arm.service import iso

        props: dict[str, Any] = {"issuer": record.issuer, "audiences": list(record.audiences)}
        if record.subject is not None:
            props["subject"] = record.subject
        if api_version in FLEXIBLE_VERSIONS:
            if record.claims_expression is not None:
                props["claimsMatchingExpression"] = {
                    "value": record.claims_expression,
                    "languageVersion": record.language_version,
                }
            elif record.subject is None:
                props["subject"] = ""
        elif record.subject is None:
            props["subject"] = ""  # older api-versions cannot show an expression; the subject is empty
        return {
            "id": f"{identity_id}/federatedIdentityCredentials/{record.name}",
            "name": record.name,
            "type": FIC_TYPE,
            "properties": props,
            "systemData": {"createdAt": iso(record.created_at), "lastModifiedAt": iso(record.updated_at)},
        }

    def handle(self, s: Any, method: str, ref: ResourceRef, body: Any, query: dict[str, str], caller: Caller) -> Reply:
        from lanyard.arm.service import Reply

        api_version = query.get("api-version", "")
        if api_version not in API_VERSIONS:
            raise bad_request(
                f"The api-version '{api_version[:40]}' is not supported for {FIC_TYPE}. The supported versions are "
                f"'{', '.join(sorted(API_VERSIONS))}'.",
                "InvalidApiVersionParameter",
            )
        if method not in _VERBS or (ref.is_collection and method != "GET"):
            raise ArmError("The requested method is not allowed here.", code="MethodNotAllowed", status=405)
        parent = ref.parent
        assert parent is not None and ref.resource_group is not None
        # Authorize before looking anything up, as for every resource.
        self.control.authorize(s, caller, f"{FIC_TYPE}/{_VERBS[method]}", parent.id)
        identity = repo.get_resource(s, resource_key(parent.id))
        if identity is None:
            raise not_found(
                f"The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{parent.name}' under resource "
                f"group '{ref.resource_group}' was not found."
            )
        if ref.is_collection:
            items = [self.json(identity.id, r, api_version) for r in fedrepo.list_for_owner(s, identity.key)]
            return self.control.page(items, query, f"{identity.id}/federatedIdentityCredentials")
        name = ref.name
        if not NAME.match(name):
            raise bad_request(
                f"The federated identity credential name '{name[:120]}' is invalid: 3-120 letters, digits, '-' "
                "or '_', starting with a letter or digit.",
                "InvalidResourceName",
            )
        if method != "GET":
            fedrepo.lock_owner(s, identity.key)
        existing = fedrepo.get(s, identity.key, name)
        if method == "GET":
            if existing is None:
                raise not_found(f"The federated identity credential '{name}' was not found.", "NotFound")
            return Reply(200, self.json(identity.id, existing, api_version))
        if method == "DELETE":
            if existing is None:
                return Reply(204)
            fedrepo.delete_one(s, identity.key, existing.id)
            return Reply(200)
        return self._put(s, identity, name, existing, body, api_version)

    def _put(
        self,
        s: Any,
        identity: repo.ResourceRecord,
        name: str,
        existing: fedrepo.FederatedRecord | None,
        body: Any,
        api_version: str,
    ) -> Reply:
        from lanyard.arm.service import Reply

        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise bad_request("The request content must be an object with 'properties'.", "InvalidRequestContent")
        props = body["properties"]
        expression = props.get("claimsMatchingExpression")
        if expression is not None and api_version not in FLEXIBLE_VERSIONS:
            raise bad_request(
                f"claimsMatchingExpression needs api-version {' or '.join(sorted(FLEXIBLE_VERSIONS))}.",
                "InvalidRequestContent",
            )
        if expression is not None and not isinstance(expression, dict):
            raise bad_request("claimsMatchingExpression must be an object {value, languageVersion}.", "BadRequest")
        client_id = identity.properties.get("clientId")
        if not client_id:
            raise bad_request("The identity has no service principal yet.", "BadRequest")
        try:
            spec = check_spec(
                props.get("issuer"),
                props.get("subject"),
                props.get("audiences"),
                expression.get("value") if expression else None,
                expression.get("languageVersion") if expression else None,
            )
        except RuleError as exc:
            raise bad_request(str(exc), "BadRequest") from exc
        now = self.control.clock.now()
        record = fedrepo.save(
            s,
            fedrepo.FederatedRecord(
                id=existing.id if existing else str(uuid.uuid4()),
                app_id=str(client_id),
                owner_kind="identity",
                owner_key=identity.key,
                name=existing.name if existing else name,
                issuer=spec.issuer,
                subject=spec.subject,
                claims_expression=spec.expression,
                language_version=spec.language_version,
                audiences=spec.audiences,
                description=None,
                created_at=existing.created_at if existing else now,
                updated_at=now,
            ),
        )
        return Reply(200 if existing else 201, self.json(identity.id, record, api_version))
