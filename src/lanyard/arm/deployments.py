"""Microsoft.Resources/deployments at resource-group and subscription scope: templates applied through the
control plane.

A deployment runs inside the PUT that creates it, one resource at a time, each through
`ControlPlane.handle` exactly as a direct PUT of that resource would be (same authorization, same
identity rules, its own transaction). It is recorded as Running before the first resource and as
Succeeded or Failed after the last, so any worker can answer the operation-status URL az polls.
The record is a row of the resources table (type Microsoft.Resources/deployments); the caller's
secure parameter values are never stored.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from lanyard.arm import providers
from lanyard.arm.federated import is_federated_path
from lanyard.arm.template import DeploymentScope, Plan, TemplateError, outputs, plan, render
from lanyard.arm.template.engine import shown_parameters
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import ArmPath, ResourceRef, bad_request, check_api_version, not_found, parse_path
from lanyard.storage import arm_repo as repo
from lanyard.storage import deployment_repo

if TYPE_CHECKING:
    from lanyard.arm.service import Caller, ControlPlane, Reply

log = logging.getLogger(__name__)

DEPLOYMENT_TYPE = "Microsoft.Resources/deployments"
STATE_KEY = "__deployment"
DEFAULT_REFERENCE_API = "2024-11-01"
ACTIONS = "Microsoft.Resources/deployments/"


class DeploymentError(ArmError):
    """ARM's deployment-error shape: code, message, details, and where in the template it lies."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int = 400,
        details: list[dict[str, Any]] | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.details = details or []
        self.path = path

    def error_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code_value, "message": self.message}
        if self.details:
            out["details"] = self.details
        if self.path:
            out["additionalInfo"] = [
                {"type": "TemplateViolation", "info": {"lineNumber": 0, "linePosition": 0, "path": self.path}}
            ]
        return out

    def body(self) -> dict[str, Any]:
        return {"error": self.error_json()}


def invalid_template(exc: TemplateError) -> DeploymentError:
    where = f" at '{exc.path}'" if exc.path else ""
    return DeploymentError(
        f"Deployment template validation failed: 'The template value{where} is not valid: {exc.message}'.",
        code="InvalidTemplate",
        path=exc.path or None,
    )


def is_deployment_path(path: ArmPath) -> bool:
    ref = path.resource
    return (
        path.kind == "resource"
        and ref is not None
        and ref.namespace.lower() == "microsoft.resources"
        and ref.types[0].lower() == "deployments"
    )


def _iso(ts: float) -> str:
    from lanyard.arm.service import iso

    return iso(ts)


def _duration(seconds: float) -> str:
    return f"PT{max(seconds, 0.0):.3f}S"


class _References:
    """`reference()` during a deployment: a GET through the control plane, as the deploying caller."""

    def __init__(self, control: ControlPlane, caller: Caller) -> None:
        self.control = control
        self.caller = caller

    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any:
        api = check_api_version(api_version or DEFAULT_REFERENCE_API)
        reply = self.control.handle("GET", parse_path(resource_id), None, {"api-version": api}, self.caller)
        body = reply.body if isinstance(reply.body, dict) else {}
        if full:
            return body
        return body.get("properties", {})


class Deployments:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    # -- routing ----------------------------------------------------------------------------------

    def handle(self, method: str, path: ArmPath, body: Any, query: dict[str, str], caller: Caller) -> Reply:
        ref = path.resource
        assert ref is not None
        types = [t.lower() for t in ref.types]
        api = query.get("api-version", DEFAULT_REFERENCE_API)
        if types == ["deployments"] and ref.is_collection:
            self._allowed(method, "GET")
            return self._list(ref, query, caller)
        if types == ["deployments"]:
            if method in ("GET", "HEAD"):
                found = self._get(ref, caller, "read")
                return self._reply(204 if method == "HEAD" else 200, None if method == "HEAD" else found)
            if method == "PUT":
                return self._put(ref, body, api, caller)
            self._allowed(method, "DELETE")
            return self._delete(ref, caller)
        if len(types) == 2 and types[1] in ("validate", "cancel", "exporttemplate") and ref.is_collection:
            self._allowed(method, "POST")
            if types[1] == "validate":
                return self._validate(ref, body, caller)
            self._get(_top(ref), caller, "read")
            if types[1] == "cancel":
                raise ArmError(
                    f"The deployment '{ref.names[0]}' cannot be cancelled: it is no longer running.",
                    code="DeploymentCannotBeCancelled",
                    status=409,
                )
            return self._reply(200, {"template": self._state(self._record(_top(ref)))["template"]})
        if len(types) == 2 and types[1] == "operations":
            self._allowed(method, "GET")
            return self._operations(ref, caller)
        if len(types) == 2 and types[1] == "operationstatuses" and not ref.is_collection:
            self._allowed(method, "GET")
            return self._status(ref, caller)
        raise not_found("The requested deployment path is not supported.", "NotFound")

    @staticmethod
    def _allowed(method: str, wanted: str) -> None:
        if method != wanted:
            raise ArmError("The requested method is not allowed here.", code="MethodNotAllowed", status=405)

    @staticmethod
    def _reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
        from lanyard.arm.service import Reply

        return Reply(status, body, headers)

    # -- storage ------------------------------------------------------------------------------------

    def _authorize(self, ref: ResourceRef, caller: Caller, verb: str) -> repo.GroupRecord | None:
        """The deployment's resource group, or None for a subscription-scope deployment."""
        with self.control.store.session() as s:
            self.control._subscription(s, ref.subscription)
            scope = ref.scope if ref.is_collection else _top(ref).id
            self.control.authorize(s, caller, ACTIONS + verb, scope)
            if ref.resource_group is None:
                return None
            return self.control._require_group(s, ref.subscription, str(ref.resource_group))

    def _record(self, ref: ResourceRef) -> Stored:
        top = _top(ref)
        with self.control.store.session() as s:
            if top.resource_group is None:
                sub_record = deployment_repo.get(s, top.id.lower())
                if sub_record is not None:
                    return Stored(sub_record.id, sub_record.name, sub_record.location, sub_record.state,
                                  sub_record.updated_at)  # fmt: skip
            else:
                record = repo.get_resource(s, top.id.lower())
                if record is not None and record.type == DEPLOYMENT_TYPE:
                    return _stored(record)
        raise not_found(f"Deployment '{ref.names[0]}' could not be found.", "DeploymentNotFound")

    @staticmethod
    def _state(record: Stored) -> dict[str, Any]:
        return dict(record.state)

    def _save(
        self, ref: ResourceRef, group: repo.GroupRecord | None, state: dict[str, Any], location: str | None = None
    ) -> Stored:
        key = ref.id.lower()
        now = self.control.clock.now()
        if group is None:
            with self.control.store.session() as s:
                old = deployment_repo.get(s, key)
                saved = deployment_repo.save(
                    s,
                    deployment_repo.SubscriptionDeploymentRecord(
                        key, old.id if old else ref.id, ref.subscription, ref.name,
                        location or (old.location if old else ""), state, old.created_at if old else now, now,
                    ),
                )  # fmt: skip
                return Stored(saved.id, saved.name, saved.location, saved.state, saved.updated_at)
        with self.control.store.session() as s:
            existing = repo.get_resource(s, key)
            record = repo.ResourceRecord(
                key=key,
                id=existing.id if existing else ref.id,
                subscription_id=ref.subscription,
                group_key=group.key,
                type=DEPLOYMENT_TYPE,
                name=ref.name,
                parent_key=None,
                kind=None,
                location=group.location,
                tags={},
                properties={STATE_KEY: state},
                identity_type="None",
                system_principal_id=None,
                user_identity_keys=(),
                created_at=existing.created_at if existing else now,
                updated_at=now,
            )
            return _stored(repo.save_resource(s, record))

    def _json(self, record: Stored) -> dict[str, Any]:
        state = self._state(record)
        props: dict[str, Any] = {
            "templateHash": state.get("templateHash"),
            "parameters": state.get("parameters", {}),
            "mode": state.get("mode", "Incremental"),
            "provisioningState": state.get("provisioningState"),
            "timestamp": _iso(float(state.get("timestamp", record.updated_at))),
            "duration": state.get("duration", "PT0S"),
            "correlationId": state.get("correlationId"),
            "providers": state.get("providers", []),
            "dependencies": state.get("dependencies", []),
            "outputs": state.get("outputs", {}),
            "outputResources": state.get("outputResources", []),
        }
        if state.get("error"):
            props["error"] = state["error"]
        out: dict[str, Any] = {"id": record.id, "name": record.name, "type": DEPLOYMENT_TYPE, "tags": {}}
        if record.location is not None:
            out["location"] = record.location
        out["properties"] = props
        return out

    # -- reads ------------------------------------------------------------------------------------

    def _get(self, ref: ResourceRef, caller: Caller, verb: str) -> dict[str, Any]:
        self._authorize(ref, caller, verb)
        return self._json(self._record(ref))

    def _list(self, ref: ResourceRef, query: dict[str, str], caller: Caller) -> Reply:
        group = self._authorize(ref, caller, "read")
        with self.control.store.session() as s:
            if group is None:
                stored = [
                    Stored(r.id, r.name, r.location, r.state, r.updated_at)
                    for r in deployment_repo.list_for(s, ref.subscription)
                ]
            else:
                records = repo.list_resources(s, sub=ref.subscription, group_key=group.key, type_=DEPLOYMENT_TYPE)
                stored = [_stored(r) for r in records]
            return self.control._page([self._json(r) for r in stored], query, ref.id)

    def _delete(self, ref: ResourceRef, caller: Caller) -> Reply:
        group = self._authorize(ref, caller, "delete")
        with self.control.store.session() as s:
            if group is None:
                deployment_repo.remove(s, ref.id.lower())
                return self._reply(204, None)
            record = repo.get_resource(s, ref.id.lower())
            if record is None or record.type != DEPLOYMENT_TYPE:
                return self._reply(204, None)
            # Deleting a deployment deletes its history, never the resources it deployed (as in ARM).
            repo.delete_resource_row(s, record.key)
        return self._reply(204, None)

    def _operations(self, ref: ResourceRef, caller: Caller) -> Reply:
        self._authorize(_top(ref), caller, "operations/read")
        record = self._record(ref)
        ops = self._state(record).get("operations", [])
        if not ref.is_collection:
            for op in ops:
                if op["operationId"] == ref.names[1]:
                    return self._reply(200, op)
            raise not_found(f"Deployment operation '{ref.names[1][:40]}' could not be found.", "NotFound")
        return self._reply(200, {"value": ops})

    def _status(self, ref: ResourceRef, caller: Caller) -> Reply:
        self._authorize(_top(ref), caller, "operationstatuses/read")
        state = self._state(self._record(ref))
        if state.get("operationId") != ref.names[1]:
            raise not_found(f"Operation '{ref.names[1][:40]}' could not be found.", "NotFound")
        body: dict[str, Any] = {
            "id": ref.id,
            "name": ref.names[1],
            "status": state.get("provisioningState"),
            "startTime": _iso(float(state.get("started", 0))),
        }
        if state.get("ended"):
            body["endTime"] = _iso(float(state["ended"]))
        if state.get("error"):
            body["error"] = state["error"]
        return self._reply(200, body)

    # -- validation and deployment ------------------------------------------------------------------

    def _plan(self, ref: ResourceRef, body: Any, group: repo.GroupRecord | None) -> tuple[Plan, str]:
        doc = body if isinstance(body, dict) else None
        props = doc.get("properties") if doc else None
        if not isinstance(props, dict):
            raise bad_request("The request content must have a 'properties' object.", "InvalidRequestContent")
        if "templateLink" in props or "parametersLink" in props:
            raise bad_request(
                "templateLink and parametersLink are not supported yet; send the template inline.", "InvalidDeployment"
            )
        mode = props.get("mode", "Incremental")
        if not isinstance(mode, str) or mode.lower() != "incremental":
            raise bad_request(
                f"The deployment mode '{str(mode)[:40]}' is not supported: Lanyard deploys in Incremental mode only.",
                "InvalidDeploymentMode",
            )
        if "template" not in props:
            raise DeploymentError(
                "The request content has no 'template'.", code="InvalidTemplate", path="properties.template"
            )
        with self.control.store.session() as s:
            sub = self.control._subscription(s, ref.subscription)
            tenant = sub.tenant_id
            sub_name = sub.display_name
        scope = DeploymentScope(
            subscription_id=ref.subscription,
            subscription_name=sub_name,
            tenant_id=tenant,
            group_id=group.id if group else None,
            group_name=group.name if group else None,
            group_location=group.location if group else None,
            group_tags=dict(group.tags) if group else {},
            deployment_name=ref.name,
            location=_location(doc) if group is None else None,
        )
        try:
            planned = plan(props["template"], props.get("parameters"), scope)
            for r in planned.resources:
                target = parse_path(r.id)
                if is_deployment_path(target):
                    continue  # a nested deployment: checked when it runs, as a deployment of its own
                if group is None and target.kind == "group":
                    continue  # a subscription-scope deployment creates resource groups
                if group is None and target.kind == "resource":
                    raise TemplateError(
                        f"The resource type '{r.type[:120]}' cannot be deployed at subscription scope; deploy it "
                        "into a resource group.",
                        f"{r.path}.type",
                    )
                if target.kind == "extension":
                    if str(target.extension_type).lower() != "roleassignments" or not target.extension_name:
                        raise TemplateError(f"The resource type '{r.type[:120]}' cannot be deployed.", r.path)
                elif target.resource is None or target.resource.is_collection:
                    raise TemplateError(f"The resource '{r.id[:200]}' is not a deployable resource.", r.path)
                elif not is_federated_path(target.resource):
                    providers.resource_type(target.resource)
        except TemplateError as exc:
            raise invalid_template(exc) from exc
        except ArmError as exc:
            raise DeploymentError(
                "The template deployment is not valid according to the validation procedure.",
                code="InvalidTemplateDeployment",
                details=[exc.body()["error"]],
            ) from exc
        return planned, "Incremental"

    def _validate(self, ref: ResourceRef, body: Any, caller: Caller) -> Reply:
        top = _top(ref)
        group = self._authorize(top, caller, "validate/action")
        planned, mode = self._plan(top, body, group)
        result = {
            "id": top.id,
            "name": top.name,
            "type": DEPLOYMENT_TYPE,
            "properties": {
                **self._summary(planned, mode),
                "provisioningState": "Succeeded",
                "timestamp": _iso(self.control.clock.now()),
                "duration": "PT0S",
                "validatedResources": [{"id": r.id} for r in planned.resources],
            },
        }
        return self._reply(200, result)

    @staticmethod
    def _summary(planned: Plan, mode: str) -> dict[str, Any]:
        providers_seen: dict[str, set[str]] = {}
        for r in planned.resources:
            namespace, _, rest = r.type.partition("/")
            providers_seen.setdefault(namespace, set()).add(rest)
        template_bytes = orjson.dumps(planned.template, option=orjson.OPT_SORT_KEYS)
        return {
            "templateHash": str(int(hashlib.sha256(template_bytes).hexdigest()[:15], 16)),
            "parameters": shown_parameters(planned),
            "mode": mode,
            "correlationId": str(uuid.uuid4()),
            "providers": [
                {"namespace": ns, "resourceTypes": [{"resourceType": t, "locations": []} for t in sorted(types)]}
                for ns, types in providers_seen.items()
            ],
            "dependencies": [
                {
                    "id": r.id,
                    "resourceType": r.type,
                    "resourceName": r.name,
                    "dependsOn": [
                        {"id": d, "resourceType": _type_of(d), "resourceName": d.rsplit("/", 1)[-1]}
                        for d in r.depends_on
                    ],
                }
                for r in planned.resources
                if r.depends_on
            ],
        }

    def _put(self, ref: ResourceRef, body: Any, api: str, caller: Caller) -> Reply:
        group = self._authorize(ref, caller, "write")
        planned, mode = self._plan(ref, body, group)
        now = self.control.clock.now()
        state: dict[str, Any] = {
            **self._summary(planned, mode),
            "template": planned.template,
            "provisioningState": "Running",
            "operationId": str(uuid.uuid4()).upper().replace("-", ""),
            "started": now,
            "timestamp": now,
            "operations": [],
        }
        location = planned.scope.location
        accepted = self._json(self._save(ref, group, state, location))
        state = self._run(ref.id, planned, state, caller)
        self._save(ref, group, state, location)
        status_url = (
            f"{self.control.base_url.rstrip('/')}{ref.id}/operationStatuses/{state['operationId']}?api-version={api}"
        )
        # The reply shows the deployment as it was accepted; the operation-status URL reports the outcome.
        return self._reply(201, accepted, {"Azure-AsyncOperation": status_url, "Retry-After": "1"})

    def _run(self, deployment_id: str, planned: Plan, state: dict[str, Any], caller: Caller) -> dict[str, Any]:
        resolver = _References(self.control, caller)
        ops: list[dict[str, Any]] = []
        failed: set[str] = set()
        errors: list[dict[str, Any]] = []
        for r in planned.resources:
            if any(d.lower() in failed for d in r.depends_on):
                failed.add(r.id.lower())  # ARM does not start what depends on a failure
                continue
            started = self.control.clock.now()
            op: dict[str, Any] = {"operationId": uuid.uuid4().hex[:16].upper()}
            try:
                resource_body = render(planned, r, resolver)
                api = check_api_version(r.api_version)
                target = parse_path(r.id)
                reply = self.control.handle("PUT", target, resource_body, {"api-version": api}, caller)
                outcome, code, message = "Succeeded", "Created" if reply.status == 201 else "OK", None
                if is_deployment_path(target) and target.resource is not None:
                    # The nested deployment has run: its own outcome is this operation's.
                    nested = self._state(self._record(target.resource))
                    if nested.get("provisioningState") != "Succeeded":
                        outcome, code, message = "Failed", "Conflict", nested.get("error") or {}
            except TemplateError as exc:
                outcome, code, message = "Failed", "BadRequest", invalid_template(exc).error_json()
            except ArmError as exc:
                outcome, code, message = "Failed", _http_code(exc.status_value), exc.body()["error"]
            except Exception:
                log.exception("deployment of %s failed unexpectedly", r.id)
                outcome, code = "Failed", "InternalServerError"
                message = {"code": "InternalServerError", "message": "The resource could not be deployed."}
            ended = self.control.clock.now()
            op.update(
                {
                    "id": f"{deployment_id}/operations/{op['operationId']}",
                    "properties": {
                        "provisioningOperation": "Create",
                        "provisioningState": outcome,
                        "timestamp": _iso(ended),
                        "duration": _duration(ended - started),
                        "trackingId": str(uuid.uuid4()),
                        "serviceRequestId": str(uuid.uuid4()),
                        "statusCode": code,
                        "statusMessage": {"status": "OK"} if message is None else {"error": message},
                        "targetResource": {"id": r.id, "resourceType": r.type, "resourceName": r.name},
                    },
                }
            )
            ops.append(op)
            if message is not None:
                failed.add(r.id.lower())
                errors.append(message)
        state = {**state, "operations": ops}
        deployed = [
            op["properties"]["targetResource"]["id"]
            for op in ops
            if op["properties"]["provisioningState"] == "Succeeded"
        ]
        state["outputResources"] = [{"id": i} for i in deployed]
        if errors:
            state["error"] = DeploymentError(
                "At least one resource deployment operation failed. Please list deployment operations for details. "
                "Please see https://aka.ms/arm-deployment-operations for usage details.",
                code="DeploymentFailed",
                details=errors,
            ).error_json()
        else:
            try:
                state["outputs"] = outputs(planned, resolver)
            except (TemplateError, ArmError) as exc:
                detail = invalid_template(exc).error_json() if isinstance(exc, TemplateError) else exc.body()["error"]
                state["error"] = DeploymentError(
                    "Unable to evaluate template outputs. Please see error details and deployment operations.",
                    code="DeploymentOutputEvaluationFailed",
                    details=[detail],
                ).error_json()
        ended = self.control.clock.now()
        state["provisioningState"] = "Failed" if state.get("error") else "Succeeded"
        state["ended"] = ended
        state["timestamp"] = ended
        state["duration"] = _duration(ended - float(state["started"]))
        return state


@dataclass(frozen=True)
class Stored:
    """A deployment record of either scope; `location` is set at subscription scope only."""

    id: str
    name: str
    location: str | None
    state: dict[str, Any]
    updated_at: float


def _stored(record: repo.ResourceRecord) -> Stored:
    return Stored(record.id, record.name, None, dict(record.properties.get(STATE_KEY, {})), record.updated_at)


def _location(doc: dict[str, Any] | None) -> str:
    """A subscription-scope deployment must say where its metadata lives, as ARM requires."""
    location = (doc or {}).get("location")
    if not isinstance(location, str) or not location.strip():
        raise bad_request("The location property is required for this definition.", "LocationRequired")
    return location


def _top(ref: ResourceRef) -> ResourceRef:
    """The deployment a sub-path (operations, operationStatuses, validate) belongs to."""
    return replace(ref, types=ref.types[:1], names=ref.names[:1])


def _type_of(resource_id: str) -> str:
    ref = parse_path(resource_id).resource
    return ref.full_type if ref else ""


def _http_code(status: int) -> str:
    return {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(status, str(status))
