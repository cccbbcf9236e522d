"""A template's parameters, variables, resources (copy loops, conditions, dependsOn order) and outputs.

`plan` checks the whole template and orders its resources before anything is deployed; `render` and
`outputs` evaluate a resource's body and the outputs later, when `reference()` can see what the
earlier resources became. Nothing here talks to storage: references go through a `Resolver`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lanyard.arm.template import functions as fn
from lanyard.arm.template.expressions import (
    Call,
    Member,
    Node,
    TemplateError,
    evaluate,
    is_expression,
    parse,
    type_name,
)

PARAMETER_TYPES = {
    "string": "String",
    "securestring": "String",
    "int": "Integer",
    "bool": "Boolean",
    "object": "Object",
    "secureobject": "Object",
    "array": "Array",
}
SECURE_TYPES = frozenset({"securestring", "secureobject"})
# Keys of a template resource that steer the deployment rather than being sent to the provider.
META_KEYS = frozenset(
    {
        "type", "apiversion", "name", "dependson", "condition", "copy", "comments", "metadata", "scope",
        "resourcegroup", "subscriptionid",
    }
)  # fmt: skip
NESTED_TYPE = "microsoft.resources/deployments"
MAX_COPY = 800


@dataclass(frozen=True)
class DeploymentScope:
    subscription_id: str
    subscription_name: str
    tenant_id: str
    group_id: str | None  # None at subscription scope
    group_name: str | None
    group_location: str | None
    group_tags: dict[str, str]
    deployment_name: str
    location: str | None = None  # a subscription-scope deployment's own location

    @property
    def root(self) -> str:
        """The id resources without an explicit scope are deployed under."""
        return self.group_id or f"/subscriptions/{self.subscription_id}"


class Resolver(Protocol):
    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any: ...


@dataclass
class PlannedResource:
    path: str
    type: str
    name: str
    api_version: str
    id: str
    raw: dict[str, Any]
    copy: dict[str, int] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()


@dataclass
class Plan:
    template: dict[str, Any]
    scope: DeploymentScope
    parameters: dict[str, Any]
    parameter_types: dict[str, str]
    resources: list[PlannedResource]


def _lookup(table: dict[str, Any], name: str) -> tuple[str, Any] | None:
    for k, v in table.items():
        if k.lower() == name.lower():
            return k, v
    return None


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateError(f"The value at '{path}' must be a JSON object.", path)
    return value


class Evaluator:
    """The functions an expression can call at one place in the template."""

    def __init__(
        self,
        template: dict[str, Any],
        scope: DeploymentScope,
        parameters: dict[str, Any],
        *,
        copy: dict[str, int] | None = None,
        resolver: Resolver | None = None,
        names: dict[str, str] | None = None,
    ) -> None:
        self.template = template
        self.scope = scope
        self.parameters = parameters
        self.copy = copy or {}
        self.resolver = resolver
        self.names = names or {}
        self._variables: dict[str, Any] = {}
        self._evaluating: set[str] = set()
        self.table: dict[str, Callable[..., Any]] = {
            **fn.PURE,
            "parameters": self.parameter,
            "variables": self.variable,
            "copyindex": self.copy_index,
            "resourcegroup": self.resource_group,
            "subscription": self.subscription,
            "deployment": self.deployment,
            "resourceid": self.resource_id,
            "subscriptionresourceid": self.subscription_resource_id,
            "reference": self.reference,
        }

    def function(self, name: str) -> Callable[..., Any] | None:
        return self.table.get(name)

    def lazy(self, name: str) -> bool:
        return name in fn.LAZY

    def value(self, raw: Any, path: str) -> Any:
        """Evaluate every expression inside `raw`, a JSON value found at `path`."""
        if isinstance(raw, str):
            if raw.startswith("[["):
                return raw[1:]
            if not is_expression(raw):
                return raw
            try:
                return evaluate(parse(raw[1:-1]), self)
            except TemplateError as exc:
                raise TemplateError(exc.message, exc.path or path) from exc
            except RecursionError as exc:
                raise TemplateError("The template language expression is nested too deeply.", path) from exc
        if isinstance(raw, dict):
            return {self._key(k, path): self.value(v, f"{path}.{k}") for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(raw)]
        return raw

    def _key(self, key: str, path: str) -> str:
        # Property names may be expressions too: `userAssignedIdentities` is keyed by resourceId(...).
        if not is_expression(key):
            return key[1:] if key.startswith("[[") else key
        value = self.value(key, f"{path}.{key}")
        if not isinstance(value, str):
            raise TemplateError("A property name expression must evaluate to a string.", f"{path}.{key}")
        return value

    def parameter(self, *args: Any) -> Any:
        if len(args) != 1 or not isinstance(args[0], str):
            raise TemplateError("The template function 'parameters' expects one string argument.")
        found = _lookup(self.parameters, args[0])
        if found is None:
            raise TemplateError(f"The template parameter '{args[0][:80]}' is not found.")
        return found[1]

    def variable(self, *args: Any) -> Any:
        if len(args) != 1 or not isinstance(args[0], str):
            raise TemplateError("The template function 'variables' expects one string argument.")
        found = _lookup(_object(self.template.get("variables"), "variables"), args[0])
        if found is None:
            raise TemplateError(f"The template variable '{args[0][:80]}' is not found.")
        key, raw = found
        if key in self._variables:
            return self._variables[key]
        if key in self._evaluating:
            raise TemplateError(f"The template variable '{key}' refers to itself.", f"variables.{key}")
        self._evaluating.add(key)
        try:
            # Variables are fixed for the deployment: they cannot see a copy loop's index.
            outer, self.copy = self.copy, {}
            try:
                value = self.value(raw, f"variables.{key}")
            finally:
                self.copy = outer
        finally:
            self._evaluating.discard(key)
        self._variables[key] = value
        return value

    def copy_index(self, *args: Any) -> int:
        loop: str | None = None
        offset = 0
        rest = list(args)
        if rest and isinstance(rest[0], str):
            loop = rest.pop(0)
        if rest:
            if not isinstance(rest[0], int) or isinstance(rest[0], bool) or len(rest) > 1:
                raise TemplateError("The template function 'copyIndex' expects an optional loop name and offset.")
            offset = rest[0]
        if not self.copy:
            raise TemplateError("The template function 'copyIndex' is not expected at this location.")
        if loop is None:
            return next(iter(self.copy.values())) + offset
        found = _lookup(self.copy, loop)
        if found is None:
            raise TemplateError(f"The template copy loop '{loop[:80]}' is not found.")
        return int(found[1]) + offset

    def resource_group(self, *args: Any) -> dict[str, Any]:
        if args:
            raise TemplateError("The template function 'resourceGroup' takes no arguments.")
        sc = self.scope
        if sc.group_id is None:
            raise TemplateError(
                "The template function 'resourceGroup' is not expected at this location: a subscription-scope "
                "deployment has no resource group."
            )
        return {
            "id": sc.group_id,
            "name": sc.group_name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": sc.group_location,
            "managedBy": None,
            "tags": dict(sc.group_tags),
            "properties": {"provisioningState": "Succeeded"},
        }

    def subscription(self, *args: Any) -> dict[str, Any]:
        if args:
            raise TemplateError("The template function 'subscription' takes no arguments.")
        sc = self.scope
        return {
            "id": f"/subscriptions/{sc.subscription_id}",
            "subscriptionId": sc.subscription_id,
            "tenantId": sc.tenant_id,
            "displayName": sc.subscription_name,
        }

    def deployment(self, *args: Any) -> dict[str, Any]:
        if args:
            raise TemplateError("The template function 'deployment' takes no arguments.")
        out: dict[str, Any] = {
            "name": self.scope.deployment_name,
            "properties": {"template": {"contentVersion": "1.0.0.0"}},
        }
        if self.scope.location:
            out["location"] = self.scope.location
        return out

    def resource_id(self, *args: Any) -> str:
        scope_args, type_, names = fn.id_parts("resourceId", args)
        sc = self.scope
        if len(scope_args) == 2:
            prefix = f"/subscriptions/{scope_args[0]}/resourceGroups/{scope_args[1]}"
        elif len(scope_args) == 1:
            prefix = f"/subscriptions/{sc.subscription_id}/resourceGroups/{scope_args[0]}"
        else:
            prefix = sc.root
        return fn.join_id(prefix, "resourceId", type_, names)

    def subscription_resource_id(self, *args: Any) -> str:
        scope_args, type_, names = fn.id_parts("subscriptionResourceId", args)
        if len(scope_args) > 1:
            raise TemplateError("The template function 'subscriptionResourceId' takes at most a subscription id.")
        sub = scope_args[0] if scope_args else self.scope.subscription_id
        return fn.join_id(f"/subscriptions/{sub}", "subscriptionResourceId", type_, names)

    def reference(self, *args: Any) -> Any:
        if not 1 <= len(args) <= 3 or not all(isinstance(a, str) for a in args):
            raise TemplateError(
                "The template function 'reference' expects a resource id or name, an optional "
                "api-version and optionally 'Full'."
            )
        if self.resolver is None:
            raise TemplateError(
                "The template function 'reference' is not expected at this location. It can be "
                "used in resource properties and outputs only."
            )
        target = str(args[0])
        if "/" not in target:
            found = self.names.get(target.lower())
            if found is None:
                raise TemplateError(f"The resource '{target[:120]}' is not defined in the template.")
            target = found
        full = len(args) == 3 and str(args[2]).lower() == "full"
        if len(args) == 3 and not full:
            raise TemplateError("The third argument of 'reference' must be 'Full'.")
        return self.resolver.reference(target, str(args[1]) if len(args) > 1 else None, full)


# -- planning ---------------------------------------------------------------------------------


def _check_parameters(template: dict[str, Any], supplied: dict[str, Any], ev: Evaluator) -> dict[str, str]:
    declared = _object(template.get("parameters"), "parameters")
    for name in supplied:
        if _lookup(declared, name) is None:
            raise TemplateError(
                f"The template parameters '{name[:80]}' in the parameters file are not valid; they are not "
                "present in the original template and can therefore not be provided at deployment time. The "
                f"only supported parameters for this template are '{', '.join(declared)}'.",
                f"properties.parameters.{name[:80]}",
            )
    types: dict[str, str] = {}
    for name, spec in declared.items():
        path = f"properties.template.parameters.{name}"
        spec = _object(spec, path)
        kind = spec.get("type")
        if not isinstance(kind, str) or kind.lower() not in PARAMETER_TYPES:
            raise TemplateError(
                f"The template parameter '{name}' has an invalid type '{str(kind)[:40]}'. Allowed: "
                "string, securestring, int, bool, object, secureObject, array.",
                f"{path}.type",
            )
        types[name] = kind.lower()
        given = _lookup(supplied, name)
        if given is not None:
            value = given[1]
            if isinstance(value, dict) and "reference" in value:
                raise TemplateError(
                    f"The template parameter '{name}' uses a Key Vault reference, which Lanyard does not resolve yet.",
                    f"properties.parameters.{name}",
                )
            if not isinstance(value, dict) or "value" not in value:
                raise TemplateError(
                    f"The template parameter '{name}' must be given as {{\"value\": ...}}.",
                    f"properties.parameters.{name}",
                )
            value = value["value"]
        elif "defaultValue" in spec:
            value = ev.value(spec["defaultValue"], f"{path}.defaultValue")
        else:
            raise TemplateError(f"The value for the template parameter '{name}' is not provided.", path)
        want = PARAMETER_TYPES[kind.lower()]
        if type_name(value) != want:
            raise TemplateError(
                f"Template parameter '{name}' was provided an invalid value. Expected a value of type '{want}', "
                f"but received a value of type '{type_name(value)}'.",
                path,
            )
        allowed = spec.get("allowedValues")
        if isinstance(allowed, list) and not any(fn.equals(value, a) for a in allowed):
            shown = "" if kind.lower() in SECURE_TYPES else f" '{str(value)[:80]}'"
            raise TemplateError(
                f"The provided value{shown} for the template parameter '{name}' is not valid. The value must be "
                f"one of: {', '.join(str(a)[:40] for a in allowed)}.",
                path,
            )
        ev.parameters[name] = value
    return types


def _string_at(ev: Evaluator, raw: dict[str, Any], key: str, path: str) -> str:
    value = ev.value(raw.get(key), f"{path}.{key}")
    if not isinstance(value, str) or not value:
        raise TemplateError(f"The template resource property '{key}' must be a non-empty string.", f"{path}.{key}")
    return value


def _expand(
    template: dict[str, Any], scope: DeploymentScope, params: dict[str, Any]
) -> tuple[list[PlannedResource], dict[str, list[str]], set[str]]:
    """Each template resource, copied `copy.count` times, minus those whose condition is false."""
    resources = template.get("resources")
    if not isinstance(resources, list):
        raise TemplateError(
            "Required property 'resources' not found in the template, or it is not an array.",
            "properties.template.resources",
        )
    planned: list[PlannedResource] = []
    loops: dict[str, list[str]] = {}
    skipped: set[str] = set()
    for i, raw in enumerate(resources):
        path = f"properties.template.resources[{i}]"
        raw = _object(raw, path)
        if "resources" in raw:
            raise TemplateError(
                "Nested child resources are not supported yet; declare the child at the top "
                "level with a full type and name.",
                f"{path}.resources",
            )
        raw_lower = {k.lower(): v for k, v in raw.items()}
        copies: list[dict[str, int]] = [{}]
        loop_name: str | None = None
        if "copy" in raw_lower:
            spec = _object(raw_lower["copy"], f"{path}.copy")
            loop_name = spec.get("name")
            count = Evaluator(template, scope, params).value(spec.get("count"), f"{path}.copy.count")
            if not isinstance(loop_name, str) or not loop_name:
                raise TemplateError("A copy loop needs a 'name'.", f"{path}.copy.name")
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COPY:
                raise TemplateError(f"The copy count must be an integer from 0 to {MAX_COPY}.", f"{path}.copy.count")
            copies = [{loop_name: k} for k in range(count)]
            loops[loop_name.lower()] = []
        for copy in copies:
            ev = Evaluator(template, scope, params, copy=copy)
            where = f"{path}[copyIndex {copy[loop_name]}]" if loop_name else path
            type_ = _string_at(ev, raw_lower, "type", where)
            name = _string_at(ev, raw_lower, "name", where)
            api = _string_at(ev, raw_lower, "apiversion", where)
            names = name.split("/")
            if len(names) != len(type_.split("/")) - 1 or not all(names):
                raise TemplateError(
                    f"The template resource '{name[:120]}' for type '{type_[:120]}' has incorrect segment lengths. "
                    "A nested resource type must have identical number of segments as its resource name.",
                    f"{where}.name",
                )
            parent = scope.root
            if type_.lower() == NESTED_TYPE:
                parent = _nested_root(ev, raw_lower, scope, where)
            elif "scope" in raw_lower:
                # An extension resource (a role assignment, say) on another resource of the deployment.
                parent = ev.value(raw_lower["scope"], f"{where}.scope")
                if not isinstance(parent, str) or not parent.lower().startswith(scope.root.lower() + "/"):
                    raise TemplateError(
                        "The resource 'scope' must be the id of a resource in the deployment's resource group.",
                        f"{where}.scope",
                    )
            id_ = fn.join_id(parent, "resourceId", type_, names)
            if "condition" in raw_lower:
                keep = ev.value(raw_lower["condition"], f"{where}.condition")
                if not isinstance(keep, bool):
                    raise TemplateError("The resource condition must evaluate to a boolean.", f"{where}.condition")
                if not keep:
                    skipped.add(id_.lower())
                    continue
            depends = ev.value(raw_lower.get("dependson", []), f"{where}.dependsOn")
            if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
                raise TemplateError("dependsOn must be an array of strings.", f"{where}.dependsOn")
            if any(p.id.lower() == id_.lower() for p in planned):
                raise TemplateError(f"The resource '{id_}' is defined multiple times in the template.", where)
            planned.append(PlannedResource(where, type_, name, api, id_, raw_lower, copy, tuple(depends)))
            if loop_name:
                loops[loop_name.lower()].append(id_)
    return planned, loops, skipped


def _nested_root(ev: Evaluator, raw: dict[str, Any], scope: DeploymentScope, where: str) -> str:
    """Where a nested deployment goes: its `resourceGroup` in this subscription, else this deployment's scope."""
    sub = ev.value(raw.get("subscriptionid"), f"{where}.subscriptionId")
    if sub is not None and (not isinstance(sub, str) or sub.lower() != scope.subscription_id.lower()):
        raise TemplateError(
            f"The nested deployment targets subscription '{str(sub)[:64]}'; Lanyard deploys nested deployments "
            "into the deploying subscription only.",
            f"{where}.subscriptionId",
        )
    group = ev.value(raw.get("resourcegroup"), f"{where}.resourceGroup")
    if group is None:
        return scope.root
    if not isinstance(group, str) or not group:
        raise TemplateError(
            "The nested deployment's 'resourceGroup' must be a non-empty string.", f"{where}.resourceGroup"
        )
    return f"/subscriptions/{scope.subscription_id}/resourceGroups/{group}"


def inner_scope(properties: Any) -> bool:
    options = properties.get("expressionEvaluationOptions") if isinstance(properties, dict) else None
    return isinstance(options, dict) and str(options.get("scope", "")).lower() == "inner"


def _resolve_dependencies(planned: list[PlannedResource], loops: dict[str, list[str]], skipped: set[str]) -> None:
    by_id = {p.id.lower(): p for p in planned}
    by_name: dict[str, list[str]] = {}
    for p in planned:
        by_name.setdefault(p.name.lower(), []).append(p.id)
        by_name.setdefault(f"{p.type}/{p.name}".lower(), []).append(p.id)
    for p in planned:
        resolved: list[str] = []
        for dep in p.depends_on:
            key = dep.lower()
            if key in by_id:
                targets = [by_id[key].id]
            elif key in loops:
                targets = loops[key]
            elif key in by_name:
                targets = by_name[key]
            elif _type_and_name(key) in by_name:
                # An id built at another scope (a nested deployment's, say): ARM matches type and name.
                targets = by_name[_type_and_name(key)]
            elif key in skipped or any(s.endswith("/" + key) for s in skipped):
                targets = []  # a dependency whose condition is false is dropped, as in ARM
            else:
                raise TemplateError(
                    f"The resource '{dep[:200]}' is not defined in the template.", f"{p.path}.dependsOn"
                )
            resolved.extend(t for t in targets if t.lower() != p.id.lower() and t not in resolved)
        p.depends_on = tuple(resolved)


def _type_and_name(resource_id: str) -> str:
    """`ns/type/name` of a resource id (child types and names joined), or '' when it is not one."""
    parts = resource_id.strip("/").split("/")
    lower = [p.lower() for p in parts]
    if "providers" not in lower:
        return ""
    at = len(lower) - 1 - lower[::-1].index("providers")
    rest = parts[at + 1 :]
    if len(rest) < 3 or len(rest) % 2 == 0:
        return ""
    return "/".join([rest[0], *rest[1::2], *rest[2::2]]).lower()


def _order(planned: list[PlannedResource]) -> list[PlannedResource]:
    """Kahn's algorithm, keeping template order among resources that are ready together."""
    remaining = list(planned)
    done: set[str] = set()
    ordered: list[PlannedResource] = []
    while remaining:
        ready = [p for p in remaining if all(d.lower() in done for d in p.depends_on)]
        if not ready:
            raise TemplateError(
                f"Circular dependency detected on resource: '{remaining[0].id}'. Please see "
                "https://aka.ms/arm-template/#resources for usage details.",
                f"{remaining[0].path}.dependsOn",
            )
        for p in ready:
            ordered.append(p)
            done.add(p.id.lower())
            remaining.remove(p)
    return ordered


CONTEXT_FUNCTIONS = frozenset(
    {
        "parameters",
        "variables",
        "copyindex",
        "resourcegroup",
        "subscription",
        "deployment",
        "resourceid",
        "subscriptionresourceid",
        "reference",
    }
)


def _calls(node: Node) -> list[str]:
    if isinstance(node, Call):
        return [node.name, *(n for arg in node.args for n in _calls(arg))]
    if isinstance(node, Member):
        return _calls(node.target) + _calls(node.key)
    return []


def check_expressions(raw: Any, path: str) -> None:
    """Every expression parses and names known functions, before anything is deployed (as ARM checks)."""
    if isinstance(raw, str):
        if is_expression(raw):
            try:
                node = parse(raw[1:-1])
            except TemplateError as exc:
                raise TemplateError(exc.message, path) from exc
            for name in _calls(node):
                if name.lower() not in fn.PURE and name.lower() not in CONTEXT_FUNCTIONS:
                    raise TemplateError(
                        f"The template function '{name[:60]}' is not valid. Please see "
                        "https://aka.ms/arm-functions for usage details.",
                        path,
                    )
    elif isinstance(raw, dict):
        for k, v in raw.items():
            check_expressions(k, f"{path}.{k}")
            check_expressions(v, f"{path}.{k}")
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            check_expressions(v, f"{path}[{i}]")


def plan(template: Any, supplied: Any, scope: DeploymentScope) -> Plan:
    template = _object(template, "properties.template")
    check_expressions(template, "properties.template")
    supplied = _object(supplied, "properties.parameters")
    for key in ("variables", "outputs"):
        _object(template.get(key), f"properties.template.{key}")
    params: dict[str, Any] = {}
    types = _check_parameters(template, supplied, Evaluator(template, scope, params))
    planned, loops, skipped = _expand(template, scope, params)
    _resolve_dependencies(planned, loops, skipped)
    return Plan(template, scope, params, types, _order(planned))


def _names(p: Plan) -> dict[str, str]:
    return {r.name.lower(): r.id for r in p.resources}


def render(p: Plan, resource: PlannedResource, resolver: Resolver) -> dict[str, Any]:
    """The body of the PUT for one resource: everything but the deployment's own keys, evaluated."""
    ev = Evaluator(p.template, p.scope, p.parameters, copy=resource.copy, resolver=resolver, names=_names(p))
    body: dict[str, Any] = {}
    for k, v in resource.raw.items():
        if k in META_KEYS:
            continue
        if k == "properties" and resource.type.lower() == NESTED_TYPE and inner_scope(v):
            # Inner scope: the nested template evaluates its own expressions; only what is passed in is ours.
            body[k] = {
                pk: pv if pk.lower() == "template" else ev.value(pv, f"{resource.path}.properties.{pk}")
                for pk, pv in v.items()
            }
        else:
            body[k] = ev.value(v, f"{resource.path}.{k}")
    if resource.type.lower() == NESTED_TYPE and p.scope.location and "/resourceGroups/" not in resource.id:
        body.setdefault("location", p.scope.location)
    return body


def outputs(p: Plan, resolver: Resolver) -> dict[str, dict[str, Any]]:
    ev = Evaluator(p.template, p.scope, p.parameters, resolver=resolver, names=_names(p))
    out: dict[str, dict[str, Any]] = {}
    for name, spec in _object(p.template.get("outputs"), "properties.template.outputs").items():
        path = f"properties.template.outputs.{name}"
        spec = _object(spec, path)
        kind = str(spec.get("type", "")).lower()
        if kind not in PARAMETER_TYPES:
            raise TemplateError(f"The template output '{name}' has an invalid type '{kind[:40]}'.", f"{path}.type")
        if "condition" in spec and ev.value(spec["condition"], f"{path}.condition") is False:
            continue
        value = ev.value(spec.get("value"), f"{path}.value")
        if kind in SECURE_TYPES:
            continue  # ARM never returns a secure output's value
        out[name] = {"type": PARAMETER_TYPES[kind], "value": value}
    return out


def shown_parameters(p: Plan) -> dict[str, dict[str, Any]]:
    """The deployment's `properties.parameters` as ARM reports them: secure values left out."""
    shown: dict[str, dict[str, Any]] = {}
    for name, kind in p.parameter_types.items():
        if kind in SECURE_TYPES:
            shown[name] = {"type": "SecureString" if kind == "securestring" else "SecureObject"}
        else:
            shown[name] = {"type": PARAMETER_TYPES[kind], "value": p.parameters.get(name)}
    return shown
