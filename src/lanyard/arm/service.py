"""The control plane (Resource Manager's role): resources, their identity blocks, and RBAC.

Every request is one transaction: the resource rows, the service principals the identity block
implies, and the role assignments that go with them commit together or not at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import replace
from typing import Any

from lanyard.arm import namespaces, providers
from lanyard.arm.deployments import Deployments, is_deployment_path
from lanyard.arm.federated import FederatedCredentials
from lanyard.arm.hooks import Caller, PrincipalService, Reply, SubRequest, WriteRequest
from lanyard.arm.providers import SKU_KEY, ResourceType
from lanyard.authz.evaluate import Assignment, decide
from lanyard.authz.roles import BUILT_IN, BY_ID, RoleDefinition, find_role
from lanyard.core.clock import Clock
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import (
    ArmPath,
    IdentityRequest,
    ResourceRef,
    bad_request,
    check_user_identity_id,
    is_guid,
    json_object,
    not_found,
    parse_identity,
    resource_key,
)
from lanyard.storage import arm_repo as repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage import fleet_repo, people_repo
from lanyard.storage.db import Store
from lanyard.vault.references import ReferenceStatuses

__all__ = ["Caller", "ControlPlane", "PrincipalService", "Reply", "iso"]

PAGE_SIZE = 100
READ_ONLY_PROPERTIES = frozenset(
    {
        "provisioningState",
        "principalId",
        "clientId",
        "tenantId",
        "defaultHostName",
        "hostNames",
        "enabledHostNames",
        "vmId",
        "numberOfSites",
        "isolationScope",
    }
)
ROLE_ASSIGNMENTS = "roleassignments"
ROLE_DEFINITIONS = "roledefinitions"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_json_object = json_object


def _tags(value: object) -> dict[str, str]:
    tags = _json_object(value, "tags")
    if len(tags) > 50 or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 512 and len(v) <= 256 for k, v in tags.items()
    ):
        raise bad_request("tags must map at most 50 names (512 chars) to string values (256 chars).", "InvalidTag")
    return tags


class ControlPlane:
    def __init__(
        self,
        store: Store,
        principals: PrincipalService,
        clock: Clock,
        *,
        tenant_id: str,
        zone: str,
        base_url: str,
        vault_suffix: str = "",
    ) -> None:
        self.store = store
        self.principals = principals
        self.clock = clock
        self.tenant_id = tenant_id
        self.zone = zone
        self.base_url = base_url
        self.vault_suffix = vault_suffix
        self.deployments = Deployments(self)
        self.references: ReferenceStatuses | None = None  # set by the server once its vault exists
        self.federated = FederatedCredentials(self)

    # -- authorization ------------------------------------------------------------------------

    def _effective(self, s: Any, caller: Caller) -> tuple[frozenset[str], list[Assignment]]:
        """The caller with its groups, and every assignment to any of them (read now: current)."""
        principals, records = repo.assignments_for_caller(s, caller.object_id)
        return principals, [Assignment(a.scope, a.role_definition_id, a.principal_id) for a in records]

    def authorize(self, s: Any, caller: Caller, action: str, scope: str) -> None:
        principals, assignments = self._effective(s, caller)
        if not decide(assignments, principals, action, scope).allowed:
            raise ArmError(
                f"The client '{caller.app_id}' with object id '{caller.object_id}' does not have authorization to "
                f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
                "granted, please refresh your credentials.",
                code="AuthorizationFailed",
                status=403,
            )

    # -- entry point --------------------------------------------------------------------------

    def handle(self, method: str, path: ArmPath, body: Any, query: dict[str, str], caller: Caller) -> Reply:
        if is_deployment_path(path):
            # Outside this method's session: a deployment opens one per resource it applies.
            return self.deployments.handle(method, path, body, query, caller)
        with self.store.session() as s:
            if path.kind == "subscriptions":
                return self._list_subscriptions(s, caller)
            assert path.subscription is not None
            self._subscription(s, path.subscription)
            if path.kind == "subscription":
                self.authorize(
                    s, caller, "Microsoft.Resources/subscriptions/read", f"/subscriptions/{path.subscription}"
                )
                return Reply(200, self._subscription_json(s, path.subscription))
            if path.kind == "groups":
                return self._groups(s, method, path.subscription, caller, query)
            if path.kind == "group":
                assert path.resource_group is not None
                return self._group(s, method, path.subscription, path.resource_group, body, caller)
            if path.kind == "group_resources":
                assert path.resource_group is not None
                return self._group_resources(s, method, path.subscription, path.resource_group, caller, query)
            if path.kind == "extension":
                return self._extension(s, method, path, body, query, caller)
            if path.kind in ("namespaces", "namespace"):
                return self._namespace(s, method, path, caller)
            if path.kind == "subscription_resources":
                return self._subscription_resources(s, method, path.subscription, query, caller)
            assert path.resource is not None
            return self._resource(s, method, path.resource, path.action, body, query, caller)

    # -- subscriptions ------------------------------------------------------------------------

    def _subscription(self, s: Any, sub: str) -> dirrepo.SubscriptionRecord:
        for record in dirrepo.list_subscriptions(s, self.tenant_id):
            if record.id == sub:
                return record
        raise not_found(f"The subscription '{sub}' could not be found.", "SubscriptionNotFound")

    def _subscription_json(self, s: Any, sub: str) -> dict[str, Any]:
        record = self._subscription(s, sub)
        return {
            "id": f"/subscriptions/{record.id}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": record.id,
            "tenantId": record.tenant_id,
            "displayName": record.display_name,
            "state": record.state,
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "Lanyard",
                "spendingLimit": "Off",
            },
        }

    def _list_subscriptions(self, s: Any, caller: Caller) -> Reply:
        scopes = [a.scope.lower() for a in self._effective(s, caller)[1]]
        visible = [
            sub
            for sub in dirrepo.list_subscriptions(s, self.tenant_id)
            if any(sc == f"/subscriptions/{sub.id}" or sc.startswith(f"/subscriptions/{sub.id}/") for sc in scopes)
        ]
        return Reply(
            200,
            {
                "value": [self._subscription_json(s, sub.id) for sub in visible],
                "count": {"type": "Total", "value": len(visible)},
            },
        )

    # -- resource groups ----------------------------------------------------------------------

    @staticmethod
    def _group_key(sub: str, name: str) -> str:
        return f"/subscriptions/{sub}/resourcegroups/{name}".lower()

    def _group_json(self, g: repo.GroupRecord) -> dict[str, Any]:
        return {
            "id": g.id,
            "name": g.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": g.location,
            "tags": g.tags,
            "properties": {"provisioningState": "Succeeded"},
        }

    def _require_group(self, s: Any, sub: str, name: str) -> repo.GroupRecord:
        group = repo.get_group(s, self._group_key(sub, name))
        if group is None:
            raise not_found(f"Resource group '{name}' could not be found.", "ResourceGroupNotFound")
        return group

    def _groups(self, s: Any, method: str, sub: str, caller: Caller, query: dict[str, str]) -> Reply:
        if method != "GET":
            raise ArmError(
                "The requested method is not allowed on resource group collections.",
                code="MethodNotAllowed",
                status=405,
            )
        scope = f"/subscriptions/{sub}"
        groups = repo.list_groups(s, sub)
        principals, assignments = self._effective(s, caller)
        visible = [
            g
            for g in groups
            if decide(assignments, principals, "Microsoft.Resources/subscriptions/resourceGroups/read", g.id).allowed
        ]
        if not visible and groups:
            self.authorize(s, caller, "Microsoft.Resources/subscriptions/resourceGroups/read", scope)
        return self.page([self._group_json(g) for g in visible], query, f"/subscriptions/{sub}/resourcegroups")

    def _group(self, s: Any, method: str, sub: str, name: str, body: Any, caller: Caller) -> Reply:
        key = self._group_key(sub, name)
        group_id = f"/subscriptions/{sub}/resourceGroups/{name}"
        action = "Microsoft.Resources/subscriptions/resourceGroups/"
        if method in ("GET", "HEAD"):
            self.authorize(s, caller, action + "read", group_id)
            group = repo.get_group(s, key)
            if method == "HEAD":
                return Reply(204 if group else 404)
            if group is None:
                raise not_found(f"Resource group '{name}' could not be found.", "ResourceGroupNotFound")
            return Reply(200, self._group_json(group))
        if method in ("PUT", "PATCH"):
            self.authorize(s, caller, action + "write", group_id)
            doc = _json_object(body, "body")
            existing = repo.get_group(s, key)
            if method == "PATCH" and existing is None:
                raise not_found(f"Resource group '{name}' could not be found.", "ResourceGroupNotFound")
            location = doc.get("location") or (existing.location if existing else None)
            if not isinstance(location, str) or not location:
                raise bad_request("The 'location' property is required for a resource group.", "LocationRequired")
            if existing and method == "PUT" and location.replace(" ", "").lower() != existing.location.lower():
                raise ArmError(
                    f"Invalid resource group location '{location}'. The Resource group already exists "
                    f"in location '{existing.location}'.",
                    code="InvalidResourceGroupLocation",
                    status=409,
                )
            tags = _tags(doc["tags"]) if "tags" in doc else (existing.tags if existing else {})
            group = repo.put_group(
                s,
                key,
                existing.id if existing else group_id,
                sub,
                existing.name if existing else name,
                location.replace(" ", "").lower(),
                tags,
                self.clock.now(),
            )
            return Reply(200 if existing else 201, self._group_json(group))
        if method == "DELETE":
            self.authorize(s, caller, action + "delete", group_id)
            group = self._require_group(s, sub, name)
            for record in repo.list_resources(s, group_key=group.key):
                if record.parent_key is None and repo.get_resource(s, record.key) is not None:
                    self._delete_resource_tree(s, record)
            repo.delete_assignments_at_or_below(s, key)
            repo.delete_group_row(s, key)
            return Reply(200)
        raise ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)

    def _group_resources(
        self, s: Any, method: str, sub: str, name: str, caller: Caller, query: dict[str, str]
    ) -> Reply:
        group = self._require_group(s, sub, name)
        self.authorize(s, caller, "Microsoft.Resources/subscriptions/resourceGroups/resources/read", group.id)
        expand = {e.strip().lower() for e in query.get("$expand", "").split(",") if e.strip()}
        items = [
            self._listed_json(s, r, expand)
            for r in repo.list_resources(s, group_key=group.key)
            if providers.listed(r.type)
        ]
        return self.page(items, query, f"{group.id}/resources")

    # -- provider namespaces and subscription-wide lists ----------------------------------------

    def _namespace(self, s: Any, method: str, path: ArmPath, caller: Caller) -> Reply:
        assert path.subscription is not None
        if method != "GET":
            raise ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)
        self.authorize(
            s, caller, "Microsoft.Resources/subscriptions/providers/read", f"/subscriptions/{path.subscription}"
        )
        if path.namespace is None:
            return Reply(200, namespaces.namespaces_json(path.subscription))
        return Reply(200, namespaces.namespace_json(path.subscription, path.namespace))

    def _namespace_action(self, s: Any, ref: ResourceRef, body: Any, caller: Caller) -> Reply:
        check = namespaces.NAME_CHECKS.get(ref.namespace.lower())
        if check is None or ref.types[0].lower() != "checknameavailability":
            raise namespaces.unsupported_action(ref.namespace, ref.types[0])
        type_name, answer = check
        namespace = type_name.split("/")[0]
        self.authorize(s, caller, f"{namespace}/checknameavailability/read", f"/subscriptions/{ref.subscription}")
        taken = {r.name.lower() for r in repo.list_resources(s, type_=type_name)}
        return Reply(200, answer(body, taken))

    def _subscription_resources(
        self, s: Any, method: str, sub: str | None, query: dict[str, str], caller: Caller
    ) -> Reply:
        assert sub is not None
        if method != "GET":
            raise ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)
        wanted = namespaces.parse_resource_filter(query.get("$filter", ""))
        assignments = [
            Assignment(a.scope, a.role_definition_id, a.principal_id)
            for a in repo.assignments_for_principal(s, caller.object_id)
        ]
        group_key = self._group_key(sub, wanted["resourcegroup"]) if "resourcegroup" in wanted else None
        expand = {e.strip().lower() for e in query.get("$expand", "").split(",") if e.strip()}
        items = []
        for r in repo.list_resources(s, sub=sub, group_key=group_key):
            if not providers.listed(r.type):
                continue
            if "resourcetype" in wanted and r.type.lower() != wanted["resourcetype"].lower():
                continue
            if "name" in wanted and r.name.lower() != wanted["name"].lower():
                continue
            if not decide(assignments, caller.object_id, f"{r.type}/read", r.id).allowed:
                continue
            items.append(self._listed_json(s, r, expand))
        return self.page(items, query, f"/subscriptions/{sub}/resources")

    def _listed_json(self, s: Any, r: repo.ResourceRecord, expand: set[str]) -> dict[str, Any]:
        """A resource as ARM's generic lists show it: no properties, but its sku and identity."""
        out = self._generic_json(r)
        if SKU_KEY in r.properties:
            out["sku"] = r.properties[SKU_KEY]
        if providers.resource_type(self._ref_of(r)).supports_identity and r.identity_type != "None":
            out["identity"] = self._identity_json(s, r)
        if "createdtime" in expand:
            out["createdTime"] = iso(r.created_at)
        if "changedtime" in expand:
            out["changedTime"] = iso(r.updated_at)
        if "provisioningstate" in expand:
            out["provisioningState"] = "Succeeded"
        return out

    # -- provider resources -------------------------------------------------------------------

    def _generic_json(self, r: repo.ResourceRecord) -> dict[str, Any]:
        out = {"id": r.id, "name": r.name, "type": r.type, "location": r.location, "tags": r.tags}
        if r.kind:
            out["kind"] = r.kind
        return out

    def _ref_of(self, record: repo.ResourceRecord) -> ResourceRef:
        from lanyard.protocol.arm import parse_path

        ref = parse_path(record.id).resource
        assert ref is not None
        return ref

    def _identity_json(self, s: Any, record: repo.ResourceRecord) -> dict[str, Any]:
        block: dict[str, Any] = {"type": record.identity_type}
        if record.system_principal_id:
            block["principalId"] = record.system_principal_id
            block["tenantId"] = self.tenant_id
        if record.user_identity_keys:
            users = {}
            for key in record.user_identity_keys:
                uai = repo.get_resource(s, key)
                if uai is None:
                    continue
                users[uai.id] = {
                    "principalId": uai.properties.get("principalId"),
                    "clientId": uai.properties.get("clientId"),
                }
            block["userAssignedIdentities"] = users
        return block

    def resource_json(self, s: Any, record: repo.ResourceRecord) -> dict[str, Any]:
        ref = self._ref_of(record)
        type_ = providers.resource_type(ref)
        ctx: dict[str, Any] = {
            "zone": self.zone,
            "vault_suffix": self.vault_suffix,
            "id": ref.id,
            "name": record.name,
            "names": ref.names,
            "location": record.location,
            "resource_group": ref.resource_group,
        }
        if type_.hooks.read_context is not None:
            ctx.update(type_.hooks.read_context(self, s, record))
        out: dict[str, Any] = {
            "id": record.id,
            "name": "/".join(ref.names) if len(ref.names) > 1 else record.name,
            "type": record.type,
            "location": record.location,
            "tags": record.tags,
        }
        if record.kind:
            out["kind"] = record.kind
        if SKU_KEY in record.properties:
            out["sku"] = record.properties[SKU_KEY]
        out["properties"] = providers.shaped_properties(type_, ref, record.properties, ctx)
        if type_.supports_identity:
            out["identity"] = self._identity_json(s, record)
        out["systemData"] = {"createdAt": iso(record.created_at), "lastModifiedAt": iso(record.updated_at)}
        return out

    def require_resource(self, s: Any, ref: ResourceRef) -> repo.ResourceRecord:
        record = repo.get_resource(s, resource_key(ref.id))
        if record is None:
            raise not_found(
                f"The Resource '{ref.full_type}/{'/'.join(ref.names)}' under resource group "
                f"'{ref.resource_group}' was not found."
            )
        return record

    def _resource(
        self,
        s: Any,
        method: str,
        ref: ResourceRef,
        action: str | None,
        body: Any,
        query: dict[str, str],
        caller: Caller,
    ) -> Reply:
        if ref.resource_group is None:
            if method == "POST" and ref.is_collection and len(ref.types) == 1:
                return self._namespace_action(s, ref, body, caller)
            # Subscription-wide lists: GET /subscriptions/{s}/providers/{ns}/{type}
            if method == "GET" and ref.is_collection and len(ref.types) == 1:
                providers.resource_type(ref)
                return self._list_type(s, ref, None, query, caller)
            raise not_found("The requested path is not an ARM resource path.", "NotFound")
        routed = self._provider_route(s, method, ref, action, body, query, caller)
        if routed is not None:
            return routed
        if method == "POST" and ref.is_collection and ref.parent is not None:
            return self._resource_action(s, ref, caller)
        type_ = providers.resource_type(ref)
        verbs = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
        if method not in verbs or (ref.is_collection and method != "GET"):
            raise ArmError("The requested method is not allowed here.", code="MethodNotAllowed", status=405)
        # Authorize before looking anything up, so a caller without rights learns nothing about what exists.
        scope = ref.scope if ref.is_collection and ref.parent is None else ref.id
        self.authorize(s, caller, f"{type_.full_type}/{verbs[method]}", scope)
        group = self._require_group(s, ref.subscription, ref.resource_group)
        if ref.is_collection:
            return self._list_type(s, ref, group, query, caller)
        if method == "GET":
            return Reply(200, self.resource_json(s, self.require_resource(s, ref)))
        if method in ("PUT", "PATCH"):
            return self._write_resource(s, method, ref, type_, group, _json_object(body, "body"), caller)
        record = repo.get_resource(s, resource_key(ref.id))
        if record is None:
            return Reply(204)
        self._delete_resource_tree(s, record)
        return Reply(200)

    def _provider_route(
        self,
        s: Any,
        method: str,
        ref: ResourceRef,
        action: str | None,
        body: Any,
        query: dict[str, str],
        caller: Caller,
    ) -> Reply | None:
        """A path below a resource whose provider serves that child type itself (arm/hooks.py routes),
        tried from the outermost resource in."""
        for depth in range(1, len(ref.types)):
            owner = ResourceRef(
                ref.subscription, ref.resource_group, ref.namespace, ref.types[:depth], ref.names[:depth]
            )
            owner_type = providers.TYPES.get(owner.full_type.lower())
            route = owner_type.hooks.route(ref.types[depth]) if owner_type is not None else None
            if route is None or owner_type is None:
                continue
            request = SubRequest(self, s, method, ref, owner, owner_type.full_type, action, body, query, caller)
            reply = route(request)
            if reply is not None:
                return reply
        return None

    def _resource_action(self, s: Any, ref: ResourceRef, caller: Caller) -> Reply:
        """POST {resource}/{action}: what the resource's provider offers (arm/hooks.py)."""
        assert ref.parent is not None
        type_ = providers.resource_type(ref.parent)
        handler = type_.hooks.action(ref.types[-1])
        if handler is None:
            raise not_found(f"The action '{ref.types[-1][:60]}' is not supported on {type_.full_type}.", "NotFound")
        self.authorize(s, caller, f"{type_.full_type}/{ref.types[-1].lower()}/action", ref.parent.id)
        record = self.require_resource(s, ref.parent)
        status, media, content = handler(self.resource_json(s, record), record.properties)
        return Reply(status, content, {"content-type": media})

    def _list_type(
        self, s: Any, ref: ResourceRef, group: repo.GroupRecord | None, query: dict[str, str], caller: Caller
    ) -> Reply:
        type_ = providers.resource_type(ref)
        scope = group.id if group else f"/subscriptions/{ref.subscription}"
        parent_key = None
        if ref.parent is not None:
            parent = self.require_resource(
                s, ResourceRef(ref.subscription, ref.resource_group, ref.namespace, ref.types[:-1], ref.names)
            )
            parent_key = parent.key
            scope = parent.id
        self.authorize(s, caller, f"{type_.full_type}/read", scope)
        records = repo.list_resources(
            s,
            sub=ref.subscription,
            group_key=group.key if group else None,
            type_=type_.full_type,
            parent_key=parent_key,
        )
        return self.page([self.resource_json(s, r) for r in records], query, ref.id)

    def page(self, items: list[dict[str, Any]], query: dict[str, str], path: str) -> Reply:
        start = 0
        token = query.get("$skiptoken")
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise bad_request("The $skiptoken is not valid.", "InvalidSkipToken") from exc
        try:
            size = min(int(query.get("$top", PAGE_SIZE)), PAGE_SIZE)
        except ValueError as exc:
            raise bad_request("$top must be an integer.", "InvalidTop") from exc
        size = max(size, 1)
        page = items[start : start + size]
        body: dict[str, Any] = {"value": page}
        if start + size < len(items):
            next_token = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
            api = query.get("api-version", "")
            body["nextLink"] = f"{self.base_url}{path}?api-version={api}&$skiptoken={next_token}"
            if "$top" in query:
                body["nextLink"] += f"&$top={size}"
        return Reply(200, body)

    _page = page  # the name arm/deployments.py calls it by

    def _write_resource(
        self,
        s: Any,
        method: str,
        ref: ResourceRef,
        type_: ResourceType,
        group: repo.GroupRecord,
        doc: dict[str, Any],
        caller: Caller,
    ) -> Reply:
        key = resource_key(ref.id)
        existing = repo.get_resource(s, key)
        if method == "PATCH" and existing is None:
            self.require_resource(s, ref)
        type_.check_name(ref.name)
        parent_key = None
        parent: repo.ResourceRecord | None = None
        if ref.parent is not None:
            parent = self.require_resource(s, ref.parent)
            parent_key = parent.key
        location = doc.get("location")
        if location is None:
            location = existing.location if existing else (parent.location if parent else group.location)
        if not isinstance(location, str) or not location:
            raise bad_request("The 'location' property must be a non-empty string.", "LocationRequired")
        location = location.replace(" ", "").lower()
        props_in = _json_object(doc.get("properties"), "properties")
        stored = dict(existing.properties) if existing else {}
        if method == "PUT":
            # Replace semantics for what the caller owns; what the platform assigned stays.
            stored = {k: v for k, v in stored.items() if k.startswith("__") or k in READ_ONLY_PROPERTIES}
        stored.update({k: v for k, v in props_in.items() if k not in READ_ONLY_PROPERTIES and not k.startswith("__")})
        if "sku" in doc:
            stored[SKU_KEY] = _json_object(doc["sku"], "sku")
        previous = existing.properties if existing else None
        if type_.hooks.prepare is not None:
            stored = type_.hooks.prepare(stored, previous)
        write = WriteRequest(self, s, caller, ref, key, existing.id if existing else ref.id, group.id, previous)
        if type_.hooks.validate is not None:
            stored = type_.hooks.validate(stored, write)
        tags = _tags(doc["tags"]) if "tags" in doc else (existing.tags if existing else {})
        if method == "PUT" and "tags" not in doc:
            tags = {}
        kind = type_.check_kind(doc.get("kind"), existing.kind if existing else (parent.kind if parent else None))
        if type_.hooks.kind is not None:
            kind = type_.hooks.kind(kind, stored)
        now = self.clock.now()
        record = repo.ResourceRecord(
            key=key,
            id=existing.id if existing else ref.id,
            subscription_id=ref.subscription,
            group_key=group.key,
            type=type_.full_type,
            name=ref.name,
            parent_key=parent_key,
            kind=kind,
            location=location,
            tags=tags,
            properties=stored,
            identity_type=existing.identity_type if existing else "None",
            system_principal_id=existing.system_principal_id if existing else None,
            user_identity_keys=existing.user_identity_keys if existing else (),
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        if type_.hooks.on_write is not None:
            record = type_.hooks.on_write(record, write)
        if "identity" in doc:
            if not type_.supports_identity:
                raise bad_request(
                    f"Resources of type {type_.full_type} do not support a managed identity.", "InvalidIdentity"
                )
            current = tuple(self._id_of(s, k) for k in record.user_identity_keys) if method == "PATCH" else ()
            request = parse_identity(doc["identity"], current)
            record = self._apply_identity(s, ref, record, request, caller)
        elif (
            method == "PUT"
            and type_.supports_identity
            and existing is not None
            and not type_.hooks.keeps_identity_on_put
        ):
            # A PUT without an identity block removes the identity, as ARM's replace semantics do.
            record = self._apply_identity(s, ref, record, IdentityRequest(False, ()), caller)
        repo.save_resource(s, record)
        status = 200 if existing else type_.created_status
        return Reply(status, self.resource_json(s, record))

    def _id_of(self, s: Any, key: str) -> str:
        found = repo.get_resource(s, key)
        return found.id if found else key

    def _apply_identity(
        self, s: Any, ref: ResourceRef, record: repo.ResourceRecord, request: IdentityRequest, caller: Caller
    ) -> repo.ResourceRecord:
        user_keys: list[str] = []
        for raw_id in request.user_assigned:
            uai_ref = check_user_identity_id(raw_id)
            uai = repo.get_resource(s, resource_key(uai_ref.id))
            if uai is None:
                raise bad_request(
                    f"The user-assigned identity '{raw_id[:200]}' was not found.", "InvalidUserAssignedIdentity"
                )
            if uai.key not in record.user_identity_keys:
                # Attaching someone's identity to your app hands you its permissions: Azure requires this.
                self.authorize(s, caller, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", uai.id)
            if uai.key not in user_keys:
                user_keys.append(uai.key)
        for detached in set(record.user_identity_keys) - set(user_keys):
            self._revoke_uai(s, detached)
        system_id = record.system_principal_id
        if request.system and not system_id:
            sp = self.principals.create_managed_identity(
                s, self.tenant_id, providers.resource_type(ref).hooks.principal_name(ref), record.id
            )
            system_id = sp.object_id
        elif not request.system and system_id:
            self.drop_principal(s, system_id)
            system_id = None
        kinds = []
        if system_id:
            kinds.append("SystemAssigned")
        if user_keys:
            kinds.append("UserAssigned")
        return replace(
            record,
            identity_type=", ".join(kinds) or "None",
            system_principal_id=system_id,
            user_identity_keys=tuple(sorted(user_keys)),
        )

    def _revoke_uai(self, s: Any, uai_key: str) -> None:
        uai = repo.get_resource(s, uai_key)
        principal_id = uai.properties.get("principalId") if uai else None
        if principal_id:
            self.principals.revoke_identity_credentials(s, str(principal_id))

    def revoke_workload_identities(self, s: Any, record: repo.ResourceRecord) -> None:
        """Every identity a workload's host may hold stops working: for unplacing and deleting."""
        if record.system_principal_id:
            self.principals.revoke_identity_credentials(s, record.system_principal_id)
        for uai_key in record.user_identity_keys:
            self._revoke_uai(s, uai_key)

    def drop_principal(self, s: Any, object_id: str) -> None:
        repo.delete_assignments_for_principal(s, object_id)
        self.principals.delete_managed_identity(s, object_id)

    def _delete_resource_tree(self, s: Any, record: repo.ResourceRecord) -> None:
        for child in repo.children(s, record.key):
            self._delete_resource_tree(s, child)
        for uai_key in record.user_identity_keys:
            self._revoke_uai(s, uai_key)
        if record.system_principal_id:
            self.drop_principal(s, record.system_principal_id)
        hooks = providers.hooks_of(record.type)
        if hooks.on_delete is not None:
            hooks.on_delete(self, s, record)
        repo.delete_assignments_at_or_below(s, record.key)
        fleet_repo.delete_placements_for_resource(s, record.key)
        repo.delete_resource_row(s, record.key)

    # -- role assignments and definitions -----------------------------------------------------

    def _check_scope_exists(self, s: Any, scope: str) -> None:
        from lanyard.protocol.arm import parse_scope

        sub, group, resource = parse_scope(scope)
        if group is not None:
            self._require_group(s, sub, group)
        if resource is not None:
            self.require_resource(s, resource)

    def _definition_json(self, role: RoleDefinition, scope: str) -> dict[str, Any]:
        # Built-in roles have one id under the subscription, whatever scope below it they are read at.
        sub = "/".join(scope.split("/")[:3])
        return {
            "id": f"{sub}/providers/Microsoft.Authorization/roleDefinitions/{role.id}",
            "name": role.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": role.name,
                "type": "BuiltInRole",
                "description": role.description,
                "assignableScopes": ["/"],
                "permissions": [
                    {
                        "actions": list(role.actions),
                        "notActions": list(role.not_actions),
                        "dataActions": list(role.data_actions),
                        "notDataActions": list(role.not_data_actions),
                    }
                ],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
            },
        }

    def _assignment_json(self, a: repo.AssignmentRecord) -> dict[str, Any]:
        sub = a.scope.split("/")[2]
        return {
            "id": f"{a.scope}/providers/Microsoft.Authorization/roleAssignments/{a.name}",
            "name": a.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                f"{a.role_definition_id}",
                "principalId": a.principal_id,
                "principalType": a.principal_type,
                "scope": a.scope,
                "condition": None,
                "conditionVersion": None,
                "createdOn": iso(a.created_at),
                "updatedOn": iso(a.updated_at),
                "createdBy": a.created_by,
                "updatedBy": a.created_by,
                "delegatedManagedIdentityResourceId": None,
                "description": a.description,
            },
        }

    def _extension(self, s: Any, method: str, path: ArmPath, body: Any, query: dict[str, str], caller: Caller) -> Reply:
        assert path.scope is not None and path.extension_type is not None
        scope = path.scope
        kind = path.extension_type.lower()
        if kind == ROLE_DEFINITIONS:
            if method != "GET":
                raise ArmError("Custom role definitions are not supported.", code="MethodNotAllowed", status=405)
            self.authorize(s, caller, "Microsoft.Authorization/roleDefinitions/read", scope)
            if path.extension_name:
                role = BY_ID.get(path.extension_name.lower())
                if role is None:
                    raise not_found(
                        f"The role definition '{path.extension_name[:40]}' could not be found.",
                        "RoleDefinitionDoesNotExist",
                    )
                return Reply(200, self._definition_json(role, scope))
            roles = list(BUILT_IN)
            flt = query.get("$filter", "")
            if flt.startswith("roleName eq "):
                wanted = flt[len("roleName eq ") :].strip().strip("'").lower()
                roles = [r for r in roles if r.name.lower() == wanted]
            return Reply(200, {"value": [self._definition_json(r, scope) for r in roles]})
        if kind != ROLE_ASSIGNMENTS:
            raise not_found(f"Microsoft.Authorization/{path.extension_type[:40]} is not supported.", "NotFound")
        self._check_scope_exists(s, scope)
        if path.extension_name is None:
            if method != "GET":
                raise ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)
            return self._list_assignments(s, scope, query, caller)
        name = path.extension_name.lower()
        if not is_guid(name):
            raise bad_request(
                f"The role assignment ID '{path.extension_name[:60]}' is not valid. The role "
                "assignment ID must be a GUID.",
                "InvalidRoleAssignmentId",
            )
        if method == "GET":
            self.authorize(s, caller, "Microsoft.Authorization/roleAssignments/read", scope)
            found = repo.get_assignment(s, name)
            if found is None or found.scope.lower() != scope.lower():
                raise not_found(f"The role assignment '{name}' is not found.", "RoleAssignmentNotFound")
            return Reply(200, self._assignment_json(found))
        if method == "DELETE":
            self.authorize(s, caller, "Microsoft.Authorization/roleAssignments/delete", scope)
            found = repo.get_assignment(s, name)
            if found is None or found.scope.lower() != scope.lower():
                return Reply(204)
            repo.delete_assignment(s, name)
            return Reply(200, self._assignment_json(found))
        if method == "PUT":
            self.authorize(s, caller, "Microsoft.Authorization/roleAssignments/write", scope)
            return self._put_assignment(s, scope, name, _json_object(body, "body"), caller)
        raise ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)

    def _put_assignment(self, s: Any, scope: str, name: str, doc: dict[str, Any], caller: Caller) -> Reply:
        props = _json_object(doc.get("properties"), "properties")
        role_ref = props.get("roleDefinitionId")
        principal_id = props.get("principalId")
        if not isinstance(role_ref, str) or not isinstance(principal_id, str):
            raise bad_request(
                "properties.roleDefinitionId and properties.principalId are required.", "InvalidRoleAssignmentRequest"
            )
        role = find_role(role_ref)
        if role is None:
            raise bad_request(
                f"The specified role definition with ID '{role_ref[-36:]}' does not exist.",
                "RoleDefinitionDoesNotExist",
            )
        principal_id = principal_id.lower()
        principal_type = self._principal_type(s, principal_id) if is_guid(principal_id) else None
        if principal_type is None:
            raise bad_request(
                f"Principal {principal_id[:40]} does not exist in the directory {self.tenant_id}. "
                "Check that you have the correct principal ID.",
                "PrincipalNotFound",
            )
        existing = repo.get_assignment(s, name)
        if existing is not None:
            same = (
                existing.scope.lower() == scope.lower()
                and existing.role_definition_id == role.id
                and existing.principal_id == principal_id
            )
            if not same:
                raise ArmError(
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                    code="RoleAssignmentUpdateNotPermitted",
                    status=409,
                )
            return Reply(200, self._assignment_json(existing))
        if repo.find_assignment(s, scope, role.id, principal_id) is not None:
            raise ArmError("The role assignment already exists.", code="RoleAssignmentExists", status=409)
        now = self.clock.now()
        description = props.get("description")
        record = repo.add_assignment(
            s,
            repo.AssignmentRecord(
                name=name,
                scope=scope,
                role_definition_id=role.id,
                principal_id=principal_id,
                principal_type=principal_type,
                description=description if isinstance(description, str) else None,
                created_by=caller.object_id,
                created_at=now,
                updated_at=now,
            ),
        )
        return Reply(201, self._assignment_json(record))

    def _principal_type(self, s: Any, object_id: str) -> str | None:
        """ARM's principalType of a directory object of this tenant, or None when there is none."""
        principal = dirrepo.get_principal(s, object_id=object_id)
        if principal is not None:
            return "ServicePrincipal" if principal.tenant_id == self.tenant_id else None
        user = people_repo.get_user(s, object_id=object_id)
        if user is not None:
            return "User" if user.tenant_id == self.tenant_id else None
        group = people_repo.get_group(s, object_id)
        if group is not None:
            return "Group" if group.tenant_id == self.tenant_id else None
        return None

    def _list_assignments(self, s: Any, scope: str, query: dict[str, str], caller: Caller) -> Reply:
        from lanyard.authz.evaluate import scope_covers

        self.authorize(s, caller, "Microsoft.Authorization/roleAssignments/read", scope)
        flt = query.get("$filter", "").strip()
        at_scope = flt.startswith("atScope()")
        principal = None
        if "principalId eq " in flt:
            principal = flt.split("principalId eq ", 1)[1].strip().strip("'").lower()
        sub = scope.split("/")[2]
        items = []
        for a in repo.list_assignments(s, sub):
            above = scope_covers(a.scope, scope)
            below = scope_covers(scope, a.scope)
            if not (above or (below and not at_scope)):
                continue
            if principal and a.principal_id != principal:
                continue
            items.append(self._assignment_json(a))
        return self.page(items, query, f"{scope}/providers/Microsoft.Authorization/roleAssignments")

    # -- bootstrap helpers --------------------------------------------------------------------

    def ensure_owner(self, principal_id: str, subscription_id: str) -> None:
        scope = f"/subscriptions/{subscription_id}"
        with self.store.session() as s:
            owner = find_role("Owner")
            assert owner is not None
            if repo.find_assignment(s, scope, owner.id, principal_id) is None:
                now = self.clock.now()
                repo.add_assignment(
                    s,
                    repo.AssignmentRecord(
                        name=str(uuid.uuid5(uuid.NAMESPACE_URL, f"lanyard-owner:{scope}:{principal_id}")),
                        scope=scope,
                        role_definition_id=owner.id,
                        principal_id=principal_id,
                        principal_type="ServicePrincipal",
                        description="Lanyard admin application",
                        created_by=None,
                        created_at=now,
                        updated_at=now,
                    ),
                )
