"""`lanyard deployment group create|show|list|delete`: ARM template deployments, with az's flags."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from lanyard.cli.arm import _profile, arm, group_path, list_all, sub_path
from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result

TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
POLL_SECONDS = 0.5
MAX_WAIT = 3600.0


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror}")
    except ValueError as exc:
        fail(f"the {what} {path} is not valid JSON: {exc}")


def _coerce(value: str, declared: dict[str, Any] | None) -> Any:
    """az's KEY=VALUE: the template's declared type decides how VALUE is read."""
    kind = str((declared or {}).get("type", "string")).lower()
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            return value  # let the deployment report the type mismatch in ARM's words
    if kind == "bool":
        return {"true": True, "false": False}.get(value.lower(), value)
    if kind in ("object", "secureobject", "array"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def build_parameters(template: dict[str, Any], items: tuple[str, ...]) -> dict[str, Any]:
    declared = template.get("parameters") if isinstance(template.get("parameters"), dict) else {}
    assert isinstance(declared, dict)
    out: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            doc = _read_json(item[1:], "parameters file")
            if not isinstance(doc, dict):
                fail(f"the parameters file {item[1:]} must hold a JSON object")
            values = doc.get("parameters", doc) if "$schema" in doc or "parameters" in doc else doc
            if not isinstance(values, dict):
                fail(f"the parameters file {item[1:]} has no 'parameters' object")
            out.update(values)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"'{item}' is neither KEY=VALUE nor @FILE")
        spec = next((v for k, v in declared.items() if k.lower() == key.lower()), None)
        out[key] = {"value": _coerce(value, spec if isinstance(spec, dict) else None)}
    return out


def deployment_path(profile: Profile, group: str, name: str = "") -> str:
    base = f"{group_path(profile, group)}/providers/Microsoft.Resources/deployments"
    return f"{base}/{quote(name, safe='')}" if name else base


def _progress(op: dict[str, Any]) -> str:
    props = op.get("properties", {})
    target = props.get("targetResource", {})
    line = f"  {props.get('provisioningState', '?'):<10} {target.get('resourceType')}/{target.get('resourceName')}"
    error = (props.get("statusMessage") or {}).get("error")
    if isinstance(error, dict):
        line += f": ({error.get('code')}) {error.get('message')}"
    return line


def sub_deployment_path(profile: Profile, name: str = "") -> str:
    base = f"{sub_path(profile)}/providers/Microsoft.Resources/deployments"
    return f"{base}/{quote(name, safe='')}" if name else base


def wait(profile: Profile, path: str) -> dict[str, Any]:
    shown: set[str] = set()
    deadline = time.monotonic() + MAX_WAIT
    while True:
        found: dict[str, Any] = arm(profile, "GET", path, "resources")
        ops = arm(profile, "GET", f"{path}/operations", "resources").get("value", [])
        for op in ops:
            if op.get("operationId") not in shown and op.get("properties", {}).get("provisioningState") in TERMINAL:
                shown.add(op.get("operationId"))
                sys.stderr.write(_progress(op) + "\n")
        state = found.get("properties", {}).get("provisioningState")
        if state in TERMINAL or time.monotonic() > deadline:
            return found
        time.sleep(POLL_SECONDS)


@click.group("deployment")
def deployment() -> None:
    """Template deployments (az deployment)."""


@deployment.group("group")
def deployment_group() -> None:
    """Deployments at resource-group scope."""


@deployment_group.command("create")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", help="Defaults to the template file's name, as az does.")
@click.option("--template-file", "-f", required=True)
@click.option("--parameters", "-p", multiple=True, help="KEY=VALUE or @parameters.json; repeatable.")
@click.option("--mode", default="Incremental", show_default=True)
@click.pass_context
def create(
    ctx: click.Context,
    resource_group: str,
    name: str | None,
    template_file: str,
    parameters: tuple[str, ...],
    mode: str,
) -> None:
    """Deploy a template to a resource group and wait for the outcome, one line per resource."""
    template = read_template(template_file)
    name = name or Path(template_file).stem
    profile = _profile(ctx)
    body = {"properties": {"template": template, "parameters": build_parameters(template, parameters), "mode": mode}}
    sys.stderr.write(f"Deploying '{name}' to resource group '{resource_group}'...\n")
    deploy(profile, deployment_path(profile, resource_group, name), name, body)


def read_template(template_file: str) -> dict[str, Any]:
    template = _read_json(template_file, "template file")
    if not isinstance(template, dict):
        fail(f"the template file {template_file} must hold a JSON object")
    return template


def deploy(profile: Profile, path: str, name: str, body: dict[str, Any]) -> None:
    """PUT the deployment, print a line per finished resource while polling, then the outcome."""
    arm(profile, "PUT", path, "resources", body)
    result = wait(profile, path)
    props = result.get("properties", {})
    state = props.get("provisioningState")
    sys.stderr.write(f"Deployment '{name}': {state} ({props.get('duration')})\n")
    if state != "Succeeded":
        error = props.get("error") or {}
        details = "; ".join(f"({d.get('code')}) {d.get('message')}" for d in error.get("details", []))
        fail(f"({error.get('code')}) {error.get('message')}" + (f" Details: {details}" if details else ""))
    print_result(result)


@deployment_group.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def show(ctx: click.Context, resource_group: str, name: str) -> None:
    """Show a deployment: state, parameters (secure ones without values), outputs, error."""
    profile = _profile(ctx)
    print_result(arm(profile, "GET", deployment_path(profile, resource_group, name), "resources"))


@deployment_group.command("list")
@click.option("--resource-group", "-g", required=True)
@click.pass_context
def list_(ctx: click.Context, resource_group: str) -> None:
    """List a resource group's deployments."""
    profile = _profile(ctx)
    print_result(list_all(profile, deployment_path(profile, resource_group), "resources"))


@deployment_group.command("delete")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def delete(ctx: click.Context, resource_group: str, name: str) -> None:
    """Deletes the deployment's record only; the resources it deployed stay, as in ARM."""
    profile = _profile(ctx)
    arm(profile, "DELETE", deployment_path(profile, resource_group, name), "resources")


@deployment.group("sub")
def deployment_sub() -> None:
    """Deployments at subscription scope (resource groups, role assignments, nested deployments)."""


@deployment_sub.command("create")
@click.option("--location", "-l", required=True, help="Where the deployment's record lives, as az requires.")
@click.option("--name", "-n", help="Defaults to the template file's name, as az does.")
@click.option("--template-file", "-f", required=True)
@click.option("--parameters", "-p", multiple=True, help="KEY=VALUE or @parameters.json; repeatable.")
@click.pass_context
def sub_create(
    ctx: click.Context, location: str, name: str | None, template_file: str, parameters: tuple[str, ...]
) -> None:
    """Deploy a template to the subscription and wait for the outcome, one line per resource."""
    template = read_template(template_file)
    name = name or Path(template_file).stem
    profile = _profile(ctx)
    props = {"template": template, "parameters": build_parameters(template, parameters), "mode": "Incremental"}
    sys.stderr.write(f"Deploying '{name}' to the subscription ({location})...\n")
    deploy(profile, sub_deployment_path(profile, name), name, {"location": location, "properties": props})


@deployment_sub.command("show")
@click.option("--name", "-n", required=True)
@click.pass_context
def sub_show(ctx: click.Context, name: str) -> None:
    """Show a subscription-scope deployment."""
    profile = _profile(ctx)
    print_result(arm(profile, "GET", sub_deployment_path(profile, name), "resources"))


@deployment_sub.command("list")
@click.pass_context
def sub_list(ctx: click.Context) -> None:
    """List the subscription's deployments."""
    profile = _profile(ctx)
    print_result(list_all(profile, sub_deployment_path(profile), "resources"))


@deployment_sub.command("delete")
@click.option("--name", "-n", required=True)
@click.pass_context
def sub_delete(ctx: click.Context, name: str) -> None:
    """Deletes the deployment's record only; what it deployed stays, as in ARM."""
    profile = _profile(ctx)
    arm(profile, "DELETE", sub_deployment_path(profile, name), "resources")
