"""Control-plane commands with az's names, flags and JSON shapes: group, appservice plan, webapp,
functionapp, identity, vm, role."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from lanyard.cli.ad import find_principal
from lanyard.cli.ad_people import find_user
from lanyard.cli.context import CliError, Profile, fail
from lanyard.cli.output import print_result

API = {
    "resources": "2024-11-01",
    "web": "2024-04-01",
    "msi": "2023-01-31",
    "compute": "2024-07-01",
    "authorization": "2022-04-01",
}
SYSTEM = "[system]"
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _profile(ctx: click.Context) -> Profile:
    return Profile.load(ctx.find_root().obj["home"])


def arm(
    profile: Profile, method: str, path: str, api: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)
) -> Any:
    base = profile.endpoints["arm"].rstrip("/")
    sep = "&" if "?" in path else "?"
    return profile.call(
        method, f"{base}{path}{sep}api-version={API[api]}", resource="https://management.azure.com", body=body, ok=ok
    )


def sub_path(profile: Profile) -> str:
    return f"/subscriptions/{profile.endpoints['subscription_id']}"


def group_path(profile: Profile, group: str) -> str:
    return f"{sub_path(profile)}/resourceGroups/{group}"


def flatten(resource: dict[str, Any]) -> dict[str, Any]:
    """az prints track-1 models: properties lifted to the top, plus the resource group."""
    out = {k: v for k, v in resource.items() if k not in ("properties", "systemData")}
    for key, value in (resource.get("properties") or {}).items():
        out.setdefault(key, value)
    parts = str(resource.get("id", "")).split("/")
    if len(parts) > 4 and parts[3].lower() == "resourcegroups":
        out["resourceGroup"] = parts[4]
    return dict(sorted(out.items()))


def yes_required(yes: bool, what: str) -> None:
    if not yes:
        fail(f"Deleting {what} cannot be undone: pass --yes to confirm")


# -- group ------------------------------------------------------------------------------------


@click.group("group")
def group() -> None:
    """Manage resource groups."""


@group.command("create")
@click.option("--name", "-n", required=True)
@click.option("--location", "-l", required=True)
@click.option("--tags", multiple=True, help="KEY=VALUE, repeatable.")
@click.pass_context
def group_create(ctx: click.Context, name: str, location: str, tags: tuple[str, ...]) -> None:
    profile = _profile(ctx)
    body = {"location": location, "tags": parse_pairs(tags)}
    print_result(arm(profile, "PUT", group_path(profile, name), "resources", body))


@group.command("show")
@click.option("--name", "-n", required=True)
@click.pass_context
def group_show(ctx: click.Context, name: str) -> None:
    profile = _profile(ctx)
    print_result(arm(profile, "GET", group_path(profile, name), "resources"))


@group.command("list")
@click.pass_context
def group_list(ctx: click.Context) -> None:
    profile = _profile(ctx)
    print_result(list_all(profile, f"{sub_path(profile)}/resourcegroups", "resources"))


@group.command("delete")
@click.option("--name", "-n", required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_context
def group_delete(ctx: click.Context, name: str, yes: bool) -> None:
    yes_required(yes, f"resource group '{name}' and everything in it")
    profile = _profile(ctx)
    arm(profile, "DELETE", group_path(profile, name), "resources")


def list_all(profile: Profile, path: str, api: str) -> list[Any]:
    page = arm(profile, "GET", path, api)
    items = list(page.get("value", []))
    while page.get("nextLink"):
        page = profile.call("GET", page["nextLink"], resource="https://management.azure.com")
        items.extend(page.get("value", []))
    return items


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"'{pair}' is not KEY=VALUE")
        out[key] = value
    return out


# -- identity blocks, shared by webapp, functionapp and vm ------------------------------------


def resolve_identity_ids(profile: Profile, group: str, identities: tuple[str, ...]) -> tuple[bool, list[str]]:
    """`--identities` takes `[system]`, full resource ids, or names of identities in the group."""
    system, users = False, []
    for value in identities or (SYSTEM,):
        if value.lower() == SYSTEM:
            system = True
        elif value.startswith("/"):
            users.append(value)
        else:
            users.append(
                f"{group_path(profile, group)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{value}"
            )
    return system, users


def identity_body(system: bool, users: list[str], removed: list[str] | None = None) -> dict[str, Any]:
    """An identity block; in a PATCH, ARM merges userAssignedIdentities and `null` removes an entry."""
    kinds = []
    if system:
        kinds.append("SystemAssigned")
    if users:
        kinds.append("UserAssigned")
    block: dict[str, Any] = {"type": ", ".join(kinds) or "None"}
    if users:
        block["userAssignedIdentities"] = {u: {} for u in users}
        block["userAssignedIdentities"].update({u: None for u in removed or []})
    return block


def current_identity(resource: dict[str, Any]) -> tuple[bool, list[str]]:
    block = resource.get("identity") or {}
    kinds = str(block.get("type", "None")).lower()
    return "systemassigned" in kinds, list((block.get("userAssignedIdentities") or {}).keys())


def change_identity(
    profile: Profile, path: str, api: str, group: str, identities: tuple[str, ...], *, assign: bool
) -> dict[str, Any]:
    resource = arm(profile, "GET", path, api)
    system, users = current_identity(resource)
    want_system, want_users = resolve_identity_ids(profile, group, identities)
    removed: list[str] = []
    if assign:
        system = system or want_system
        users = users + [u for u in want_users if u.lower() not in {x.lower() for x in users}]
    else:
        system = system and not want_system
        drop = {u.lower() for u in want_users}
        removed = [u for u in users if u.lower() in drop]
        users = [u for u in users if u.lower() not in drop]
    updated = arm(profile, "PATCH", path, api, {"identity": identity_body(system, users, removed)})
    return dict(updated.get("identity") or {"type": "None"})


# -- appservice plan ----------------------------------------------------------------------------


@click.group("appservice")
def appservice() -> None:
    """Manage App Service plans."""


@appservice.group("plan")
def plan() -> None:
    """Manage App Service plans."""


@plan.command("create")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--sku", default="B1", show_default=True)
@click.option("--location", "-l")
@click.option("--is-linux", is_flag=True)
@click.pass_context
def plan_create(
    ctx: click.Context, resource_group: str, name: str, sku: str, location: str | None, is_linux: bool
) -> None:
    profile = _profile(ctx)
    loc = location or arm(profile, "GET", group_path(profile, resource_group), "resources")["location"]
    body = {
        "location": loc,
        "sku": {"name": sku},
        "kind": "linux" if is_linux else "app",
        "properties": {"reserved": is_linux},
    }
    print_result(flatten(arm(profile, "PUT", plan_path(profile, resource_group, name), "web", body)))


def plan_path(profile: Profile, group: str, name: str) -> str:
    return f"{group_path(profile, group)}/providers/Microsoft.Web/serverfarms/{name}"


@plan.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def plan_show(ctx: click.Context, resource_group: str, name: str) -> None:
    profile = _profile(ctx)
    print_result(flatten(arm(profile, "GET", plan_path(profile, resource_group, name), "web")))


@plan.command("list")
@click.option("--resource-group", "-g")
@click.pass_context
def plan_list(ctx: click.Context, resource_group: str | None) -> None:
    profile = _profile(ctx)
    scope = group_path(profile, resource_group) if resource_group else sub_path(profile)
    farms = arm(profile, "GET", f"{scope}/providers/Microsoft.Web/serverfarms", "web")
    print_result([flatten(f) for f in farms.get("value", [])])


# -- webapp and functionapp ---------------------------------------------------------------------


def site_path(profile: Profile, group: str, name: str, slot: str | None = None) -> str:
    path = f"{group_path(profile, group)}/providers/Microsoft.Web/sites/{name}"
    return f"{path}/slots/{slot}" if slot else path


RUN_USER_HELP = (
    "Run as this existing (unprivileged) user instead of the uid the agent allocates to this resource "
    "(root agents only)."
)


def make_site_group(kind: str, noun: str) -> click.Group:
    @click.group(noun)
    def site_group() -> None:
        pass

    site_group.help = f"Manage {'function apps' if kind == 'functionapp' else 'web apps'}."

    @site_group.command("create")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--plan", "-p", help="App Service plan name or id.")
    @click.option("--location", "-l")
    @click.option("--assign-identity", multiple=True, help="[system] and/or user-assigned identity ids or names.")
    @click.option(
        "--tags",
        multiple=True,
        help="KEY=VALUE, repeatable (lanyard.callerAttestation=header: Azure's header-only check).",
    )
    @click.pass_context
    def create(
        ctx: click.Context,
        resource_group: str,
        name: str,
        plan: str | None,
        location: str | None,
        assign_identity: tuple[str, ...],
        tags: tuple[str, ...],
    ) -> None:
        profile = _profile(ctx)
        loc = location or arm(profile, "GET", group_path(profile, resource_group), "resources")["location"]
        props: dict[str, Any] = {}
        if plan:
            props["serverFarmId"] = (
                plan
                if plan.startswith("/")
                else (f"{group_path(profile, resource_group)}/providers/Microsoft.Web/serverfarms/{plan}")
            )
        body: dict[str, Any] = {"location": loc, "kind": kind, "properties": props}
        if tags:
            body["tags"] = parse_pairs(tags)
        if assign_identity:
            system, users = resolve_identity_ids(profile, resource_group, assign_identity)
            body["identity"] = identity_body(system, users)
        print_result(flatten(arm(profile, "PUT", site_path(profile, resource_group, name), "web", body)))

    @site_group.command("show")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s")
    @click.pass_context
    def show(ctx: click.Context, resource_group: str, name: str, slot: str | None) -> None:
        profile = _profile(ctx)
        print_result(flatten(arm(profile, "GET", site_path(profile, resource_group, name, slot), "web")))

    @site_group.command("list")
    @click.option("--resource-group", "-g")
    @click.pass_context
    def list_(ctx: click.Context, resource_group: str | None) -> None:
        profile = _profile(ctx)
        scope = group_path(profile, resource_group) if resource_group else sub_path(profile)
        sites = list_all(profile, f"{scope}/providers/Microsoft.Web/sites", "web")
        print_result([flatten(s) for s in sites if str(s.get("kind", "app")).startswith(kind)])

    @site_group.command("delete")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s")
    @click.pass_context
    def delete(ctx: click.Context, resource_group: str, name: str, slot: str | None) -> None:
        profile = _profile(ctx)
        path = site_path(profile, resource_group, name, slot)
        arm(profile, "GET", path, "web")  # az reports a missing app as an error
        arm(profile, "DELETE", path, "web")

    @site_group.group("identity")
    def identity_group() -> None:
        """Manage the app's managed identities."""

    @identity_group.command("assign")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--identities", multiple=True, help="[system] (default) and/or user-assigned ids or names.")
    @click.option("--slot", "-s")
    @click.pass_context
    def assign(
        ctx: click.Context, resource_group: str, name: str, identities: tuple[str, ...], slot: str | None
    ) -> None:
        profile = _profile(ctx)
        path = site_path(profile, resource_group, name, slot)
        print_result(change_identity(profile, path, "web", resource_group, identities, assign=True))

    @identity_group.command("remove")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--identities", multiple=True, help="[system] (default) and/or user-assigned ids or names.")
    @click.option("--slot", "-s")
    @click.pass_context
    def remove(
        ctx: click.Context, resource_group: str, name: str, identities: tuple[str, ...], slot: str | None
    ) -> None:
        profile = _profile(ctx)
        path = site_path(profile, resource_group, name, slot)
        print_result(change_identity(profile, path, "web", resource_group, identities, assign=False))

    @identity_group.command("show")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s")
    @click.pass_context
    def identity_show(ctx: click.Context, resource_group: str, name: str, slot: str | None) -> None:
        profile = _profile(ctx)
        site = arm(profile, "GET", site_path(profile, resource_group, name, slot), "web")
        block = site.get("identity") or {}
        print_result(block if block.get("type", "None") != "None" else None)

    @site_group.group("deployment")
    def deployment() -> None:
        """Manage deployments."""

    @deployment.group("slot")
    def slot_group() -> None:
        """Manage deployment slots."""

    @slot_group.command("create")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s", required=True)
    @click.pass_context
    def slot_create(ctx: click.Context, resource_group: str, name: str, slot: str) -> None:
        profile = _profile(ctx)
        site = arm(profile, "GET", site_path(profile, resource_group, name), "web")
        body = {
            "location": site["location"],
            "kind": site.get("kind", kind),
            "properties": {"serverFarmId": (site.get("properties") or {}).get("serverFarmId")},
        }
        print_result(flatten(arm(profile, "PUT", site_path(profile, resource_group, name, slot), "web", body)))

    @slot_group.command("list")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.pass_context
    def slot_list(ctx: click.Context, resource_group: str, name: str) -> None:
        profile = _profile(ctx)
        slots = list_all(profile, f"{site_path(profile, resource_group, name)}/slots", "web")
        print_result([flatten(s) for s in slots])

    @site_group.group("config")
    def config() -> None:
        """Configure the app."""

    @config.group("appsettings")
    def appsettings() -> None:
        """Manage app settings."""

    def settings_list(settings: dict[str, str]) -> list[dict[str, Any]]:
        return [{"name": k, "slotSetting": False, "value": v} for k, v in sorted(settings.items())]

    @appsettings.command("set")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--settings", multiple=True, required=True, help="KEY=VALUE, repeatable.")
    @click.option("--slot", "-s")
    @click.pass_context
    def settings_set(
        ctx: click.Context, resource_group: str, name: str, settings: tuple[str, ...], slot: str | None
    ) -> None:
        profile = _profile(ctx)
        path = f"{site_path(profile, resource_group, name, slot)}/config/appsettings"
        current = arm(profile, "POST", f"{path}/list", "web")["properties"]
        current.update(parse_pairs(tuple(p for s in settings for p in s.split(" ") if p)))
        updated = arm(profile, "PUT", path, "web", {"properties": current})
        print_result(settings_list(updated["properties"]))

    @appsettings.command("delete")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--setting-names", multiple=True, required=True)
    @click.option("--slot", "-s")
    @click.pass_context
    def settings_delete(
        ctx: click.Context, resource_group: str, name: str, setting_names: tuple[str, ...], slot: str | None
    ) -> None:
        profile = _profile(ctx)
        path = f"{site_path(profile, resource_group, name, slot)}/config/appsettings"
        current = arm(profile, "POST", f"{path}/list", "web")["properties"]
        for key in setting_names:
            current.pop(key, None)
        print_result(settings_list(arm(profile, "PUT", path, "web", {"properties": current})["properties"]))

    @appsettings.command("list")
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s")
    @click.pass_context
    def settings_show(ctx: click.Context, resource_group: str, name: str, slot: str | None) -> None:
        profile = _profile(ctx)
        path = f"{site_path(profile, resource_group, name, slot)}/config/appsettings/list"
        print_result(settings_list(arm(profile, "POST", path, "web")["properties"]))

    @site_group.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
    @click.option("--resource-group", "-g", required=True)
    @click.option("--name", "-n", required=True)
    @click.option("--slot", "-s")
    @click.option("--agent-home", help="Run on the agent with this home folder (default: the platform's own).")
    @click.option("--user", help=RUN_USER_HELP)
    @click.option(
        "--platform",
        type=click.Choice(["appservice", "containerapps", "ml", "cloudshell", "servicefabric", "aks"]),
        default="appservice",
        show_default=True,
        help="Whose managed-identity environment the command gets: App Service, Container Apps, "
        "Azure Machine Learning, Cloud Shell or Service Fabric (the app's identities either way), or AKS "
        "workload identity (a projected token for the app's first user-assigned identity; it needs a "
        "federated credential for the platform's workload issuer, see docs/federation.md).",
    )
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.pass_context
    def run(
        ctx: click.Context,
        resource_group: str,
        name: str,
        slot: str | None,
        agent_home: str | None,
        user: str | None,
        platform: str,
        command: tuple[str, ...],
    ) -> None:
        """Run COMMAND as this app on this host, with the environment its platform gives it."""
        from lanyard.cli.run import place_here, run_workload

        profile = _profile(ctx)
        path = site_path(profile, resource_group, name, slot)
        site = arm(profile, "GET", path, "web")
        settings = arm(profile, "POST", f"{path}/config/appsettings/list", "web")["properties"]
        socket_path = place_here(profile, site["id"], agent_home)
        run_workload(
            socket_path,
            {
                "kind": "appservice",
                "resourceId": site["id"],
                "argv": list(command),
                "appSettings": settings,
                "siteName": name,
                "slotName": slot,
                "resourceGroup": resource_group,
                "hostName": (site.get("properties") or {}).get("defaultHostName", ""),
                "ownerName": f"{profile.endpoints['subscription_id']}+{resource_group}",
                "user": user,
                "platform": platform,
                "keyVaultReferenceIdentity": (site.get("properties") or {}).get("keyVaultReferenceIdentity"),
            },
        )

    return site_group


webapp = make_site_group("app", "webapp")
functionapp = make_site_group("functionapp", "functionapp")


# -- identity -----------------------------------------------------------------------------------


def uai_path(profile: Profile, group: str, name: str) -> str:
    return f"{group_path(profile, group)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


@click.group("identity")
def identity() -> None:
    """Manage user-assigned managed identities."""


@identity.command("create")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--location", "-l")
@click.pass_context
def identity_create(ctx: click.Context, resource_group: str, name: str, location: str | None) -> None:
    profile = _profile(ctx)
    loc = location or arm(profile, "GET", group_path(profile, resource_group), "resources")["location"]
    print_result(flatten(arm(profile, "PUT", uai_path(profile, resource_group, name), "msi", {"location": loc})))


@identity.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def identity_show(ctx: click.Context, resource_group: str, name: str) -> None:
    profile = _profile(ctx)
    print_result(flatten(arm(profile, "GET", uai_path(profile, resource_group, name), "msi")))


@identity.command("list")
@click.option("--resource-group", "-g")
@click.pass_context
def identity_list(ctx: click.Context, resource_group: str | None) -> None:
    profile = _profile(ctx)
    scope = group_path(profile, resource_group) if resource_group else sub_path(profile)
    items = list_all(profile, f"{scope}/providers/Microsoft.ManagedIdentity/userAssignedIdentities", "msi")
    print_result([flatten(i) for i in items])


@identity.command("delete")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def identity_delete(ctx: click.Context, resource_group: str, name: str) -> None:
    profile = _profile(ctx)
    arm(profile, "DELETE", uai_path(profile, resource_group, name), "msi")


# -- vm -----------------------------------------------------------------------------------------


def vm_path(profile: Profile, group: str, name: str) -> str:
    return f"{group_path(profile, group)}/providers/Microsoft.Compute/virtualMachines/{name}"


@click.group("vm")
def vm() -> None:
    """Manage virtual machine records (an identity holder; no real VM is started)."""


@vm.command("create")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--image", default="Debian12", show_default=True)
@click.option("--location", "-l")
@click.option("--assign-identity", multiple=True, help="[system] and/or user-assigned identity ids or names.")
@click.option(
    "--tags",
    multiple=True,
    help="KEY=VALUE, repeatable (lanyard.callerAttestation=header: Azure's header-only check).",
)
@click.pass_context
def vm_create(
    ctx: click.Context,
    resource_group: str,
    name: str,
    image: str,
    location: str | None,
    assign_identity: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    profile = _profile(ctx)
    loc = location or arm(profile, "GET", group_path(profile, resource_group), "resources")["location"]
    body: dict[str, Any] = {"location": loc, "properties": {"storageProfile": {"imageReference": {"id": image}}}}
    if tags:
        body["tags"] = parse_pairs(tags)
    if assign_identity:
        system, users = resolve_identity_ids(profile, resource_group, assign_identity)
        body["identity"] = identity_body(system, users)
    print_result(flatten(arm(profile, "PUT", vm_path(profile, resource_group, name), "compute", body)))


@vm.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def vm_show(ctx: click.Context, resource_group: str, name: str) -> None:
    profile = _profile(ctx)
    print_result(flatten(arm(profile, "GET", vm_path(profile, resource_group, name), "compute")))


@vm.command("delete")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--yes", "-y", is_flag=True)
@click.pass_context
def vm_delete(ctx: click.Context, resource_group: str, name: str, yes: bool) -> None:
    yes_required(yes, f"VM '{name}'")
    profile = _profile(ctx)
    path = vm_path(profile, resource_group, name)
    arm(profile, "GET", path, "compute")
    arm(profile, "DELETE", path, "compute")


@vm.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option(
    "--netns",
    is_flag=True,
    help="Run in a network namespace where the metadata service answers at http://169.254.169.254 (Linux, root).",
)
@click.option("--agent-home", help="Run on the agent with this home folder (default: the platform's own).")
@click.option(
    "--arc",
    is_flag=True,
    help="Speak the Azure Arc protocol (IDENTITY_ENDPOINT + IMDS_ENDPOINT, the "
    "401 key-file challenge) instead of IMDS (Linux, root).",
)
@click.option("--user", help=RUN_USER_HELP)
@click.option(
    "--platform",
    type=click.Choice(["imds", "aks"]),
    default="imds",
    show_default=True,
    help="imds: the VM's metadata service; aks: AKS workload identity instead (a projected token for the VM's "
    "first user-assigned identity; see docs/federation.md).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def vm_run(
    ctx: click.Context,
    resource_group: str,
    name: str,
    netns: bool,
    agent_home: str | None,
    arc: bool,
    user: str | None,
    platform: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND as this VM on this host, with a metadata service (IMDS) of its own."""
    from lanyard.cli.run import place_here, run_workload

    profile = _profile(ctx)
    record = arm(profile, "GET", vm_path(profile, resource_group, name), "compute")
    socket_path = place_here(profile, record["id"], agent_home)
    if arc and netns:
        fail("--arc and --netns cannot be combined")
    if platform == "aks" and (arc or netns):
        fail("--platform aks cannot be combined with --arc or --netns")
    run_workload(
        socket_path,
        {
            "kind": "arc" if arc else "imds",
            "resourceId": record["id"],
            "argv": list(command),
            "netns": netns,
            "user": user,
            "platform": "aks" if platform == "aks" else None,
        },
    )


@vm.group("identity")
def vm_identity() -> None:
    """Manage the VM's managed identities."""


@vm_identity.command("assign")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--identities", multiple=True)
@click.pass_context
def vm_identity_assign(ctx: click.Context, resource_group: str, name: str, identities: tuple[str, ...]) -> None:
    profile = _profile(ctx)
    block = change_identity(
        profile, vm_path(profile, resource_group, name), "compute", resource_group, identities, assign=True
    )
    # az vm identity assign prints this shape, not the identity block.
    print_result(
        {
            "systemAssignedIdentity": block.get("principalId") or "",
            "userAssignedIdentities": block.get("userAssignedIdentities") or {},
        }
    )


@vm_identity.command("remove")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.option("--identities", multiple=True)
@click.pass_context
def vm_identity_remove(ctx: click.Context, resource_group: str, name: str, identities: tuple[str, ...]) -> None:
    profile = _profile(ctx)
    print_result(
        change_identity(
            profile, vm_path(profile, resource_group, name), "compute", resource_group, identities, assign=False
        )
    )


@vm_identity.command("show")
@click.option("--resource-group", "-g", required=True)
@click.option("--name", "-n", required=True)
@click.pass_context
def vm_identity_show(ctx: click.Context, resource_group: str, name: str) -> None:
    profile = _profile(ctx)
    block = arm(profile, "GET", vm_path(profile, resource_group, name), "compute").get("identity") or {}
    print_result(block if block.get("type", "None") != "None" else None)


# -- role -----------------------------------------------------------------------------------------


@click.group("role")
def role() -> None:
    """Manage role definitions and assignments."""


@role.group("definition")
def definition() -> None:
    """Role definitions."""


def _definitions(profile: Profile, name: str | None = None) -> list[dict[str, Any]]:
    path = f"{sub_path(profile)}/providers/Microsoft.Authorization/roleDefinitions"
    if name:
        path += f"?$filter=roleName eq '{name}'"
    return list(arm(profile, "GET", path, "authorization")["value"])


@definition.command("list")
@click.option("--name", "-n")
@click.pass_context
def definition_list(ctx: click.Context, name: str | None) -> None:
    profile = _profile(ctx)
    out = []
    for d in _definitions(profile):
        if name and name.lower() not in (d["name"].lower(), d["properties"]["roleName"].lower()):
            continue
        flat = flatten(d)
        flat["roleType"] = flat.pop("type_", d["properties"]["type"])
        flat["type"] = d["type"]
        out.append(flat)
    print_result(out)


def resolve_role(profile: Profile, role_ref: str) -> str:
    for d in _definitions(profile):
        if role_ref.lower() in (d["name"].lower(), d["id"].lower(), d["properties"]["roleName"].lower()):
            return str(d["id"])
    fail(f"Role '{role_ref}' doesn't exist.")


def resolve_assignee(profile: Profile, assignee: str) -> str:
    """A user principal name, or the object id of a user or group, or what find_principal takes."""
    if "@" in assignee:
        return str(find_user(profile, assignee)["id"])
    try:
        return str(find_principal(profile, assignee)["id"])
    except CliError:
        if _OBJECT_ID.match(assignee):
            for kind in ("users", "groups"):
                found = profile.graph("GET", f"/{kind}/{assignee.lower()}", ok=(200, 404))
                if found and "id" in found:
                    return str(found["id"])
        found = profile.graph("GET", f"/servicePrincipals?$filter=displayName eq '{assignee.replace(chr(39), '')}'")
        if len(found["value"]) == 1:
            return str(found["value"][0]["id"])
        raise


def assignment_json(profile: Profile, a: dict[str, Any], names: dict[str, str] | None = None) -> dict[str, Any]:
    flat = flatten(a)
    flat.pop("resourceGroup", None)
    parts = str(flat.get("scope", "")).split("/")
    if len(parts) > 4 and parts[3].lower() == "resourcegroups":
        flat["resourceGroup"] = parts[4]
    if names is not None:
        flat["roleDefinitionName"] = names.get(str(flat["roleDefinitionId"]).rsplit("/", 1)[-1].lower())
    return dict(sorted(flat.items()))


@role.group("assignment")
def assignment() -> None:
    """Role assignments."""


@assignment.command("create")
@click.option(
    "--assignee",
    required=True,
    help="A user principal name, a user's or group's object id, or a service principal's object id, app id, or "
    "display name.",
)
@click.option("--assignee-object-id", "assignee_object_id")
@click.option("--role", "role_ref", required=True, help="Role name, GUID, or definition id.")
@click.option("--scope", help="Default: the subscription.")
@click.option("--description")
@click.pass_context
def assignment_create(
    ctx: click.Context,
    assignee: str,
    assignee_object_id: str | None,
    role_ref: str,
    scope: str | None,
    description: str | None,
) -> None:
    profile = _profile(ctx)
    principal = assignee_object_id or resolve_assignee(profile, assignee)
    role_id = resolve_role(profile, role_ref)
    target = (scope or sub_path(profile)).rstrip("/")
    path = f"{target}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    body = {
        "properties": {
            "roleDefinitionId": role_id,
            "principalId": principal,
            "description": description,
        }
    }
    print_result(assignment_json(profile, arm(profile, "PUT", path, "authorization", body)))


def _matching_assignments(
    profile: Profile, assignee: str | None, role_ref: str | None, scope: str | None, exact_scope: bool
) -> list[dict[str, Any]]:
    target = (scope or sub_path(profile)).rstrip("/")
    items = list_all(profile, f"{target}/providers/Microsoft.Authorization/roleAssignments", "authorization")
    principal = resolve_assignee(profile, assignee) if assignee else None
    role_id = resolve_role(profile, role_ref).rsplit("/", 1)[-1].lower() if role_ref else None
    out = []
    for a in items:
        props = a["properties"]
        if principal and props["principalId"] != principal:
            continue
        if role_id and props["roleDefinitionId"].rsplit("/", 1)[-1].lower() != role_id:
            continue
        if exact_scope and scope and props["scope"].lower() != target.lower():
            continue
        out.append(a)
    return out


@assignment.command("list")
@click.option("--assignee")
@click.option("--role", "role_ref")
@click.option("--scope")
@click.option("--all", "show_all", is_flag=True, help="Every assignment in the subscription.")
@click.pass_context
def assignment_list(
    ctx: click.Context, assignee: str | None, role_ref: str | None, scope: str | None, show_all: bool
) -> None:
    profile = _profile(ctx)
    names = {d["name"].lower(): d["properties"]["roleName"] for d in _definitions(profile)}
    found = _matching_assignments(profile, assignee, role_ref, None if show_all else scope, exact_scope=False)
    print_result([assignment_json(profile, a, names) for a in found])


@assignment.command("delete")
@click.option("--assignee")
@click.option("--role", "role_ref")
@click.option("--scope")
@click.option("--ids", multiple=True, help="Role assignment ids.")
@click.option("--yes", "-y", is_flag=True)
@click.pass_context
def assignment_delete(
    ctx: click.Context, assignee: str | None, role_ref: str | None, scope: str | None, ids: tuple[str, ...], yes: bool
) -> None:
    profile = _profile(ctx)
    if ids:
        targets = list(ids)
    else:
        if not (assignee or role_ref or scope):
            fail("Give --ids, or at least one of --assignee, --role and --scope")
        targets = [a["id"] for a in _matching_assignments(profile, assignee, role_ref, scope, exact_scope=True)]
    for target in targets:
        arm(profile, "DELETE", target, "authorization")


# -- hosts (agents) ---------------------------------------------------------------------------------


@click.group("host")
def host() -> None:
    """Manage host agents."""


@host.command("list")
@click.pass_context
def host_list(ctx: click.Context) -> None:
    profile = _profile(ctx)
    base = profile.endpoints["arm"].rstrip("/")
    print_result(profile.call("GET", f"{base}/lanyard/v1/hosts", resource="https://management.azure.com")["value"])


def _revoke_host(ctx: click.Context, host_id: str) -> None:
    profile = _profile(ctx)
    base = profile.endpoints["arm"].rstrip("/")
    url = f"{base}/lanyard/v1/hosts/{quote(host_id, safe='')}"
    print_result(profile.call("DELETE", url, resource="https://management.azure.com"))


@host.command("revoke")
@click.argument("host_id", metavar="HOST")
@click.pass_context
def host_revoke(ctx: click.Context, host_id: str) -> None:
    """Throw a host out (by id or name): its agent's next call is refused, its placements are dropped
    and the identities it held get new keys, so the ones on that machine stop working."""
    _revoke_host(ctx, host_id)


@host.command("delete")
@click.argument("host_id", metavar="HOST")
@click.pass_context
def host_delete(ctx: click.Context, host_id: str) -> None:
    """Remove a host: the same as `host revoke`."""
    _revoke_host(ctx, host_id)


@host.group("join-token")
def join_token() -> None:
    """One-time tokens for new agents."""


@join_token.command("create")
@click.option("--name", help="The host the token is meant for (informational).")
@click.pass_context
def join_token_create(ctx: click.Context, name: str | None) -> None:
    """A token for `lanyard agent --join TOKEN --server URL --ca FILE` on another machine (one use, 1 hour)."""
    profile = _profile(ctx)
    base = profile.endpoints["arm"].rstrip("/")
    created = profile.call(
        "POST", f"{base}/lanyard/v1/joinTokens", resource="https://management.azure.com", body={"name": name}
    )
    print_result({**created, "server": profile.endpoints["authority"], "caCert": profile.endpoints["ca_cert"]})


COMMANDS: list[Callable[..., Any]] = [group, appservice, webapp, functionapp, identity, vm, role, host]
