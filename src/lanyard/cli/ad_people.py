"""`lanyard ad user ...` and `lanyard ad group ...`: people in the directory, with az's names and shapes."""

from __future__ import annotations

import re
from typing import Any

import click

from lanyard.cli.ad import _profile, _quote, ad
from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def find_user(profile: Profile, ident: str) -> dict[str, Any]:
    """`--id` takes an object id or a user principal name, as az does."""
    if len(ident) > 256 or "/" in ident or "?" in ident or "#" in ident:
        fail(f"'{ident[:80]}' is not a user object id or user principal name")
    return dict(profile.graph("GET", f"/users/{ident}"))


def find_group(profile: Profile, ident: str) -> dict[str, Any]:
    """`--group` takes an object id or a display name (which must name exactly one group)."""
    if _GUID.match(ident):
        return dict(profile.graph("GET", f"/groups/{ident.lower()}"))
    found = profile.graph("GET", f"/groups?$filter=displayName eq '{_quote(ident)}'")["value"]
    if not found:
        fail(f"Group '{ident}' doesn't exist")
    if len(found) > 1:
        fail(f"More than one group is named '{ident}': use its object id")
    return dict(found[0])


@ad.group("user")
def user_group() -> None:
    """Manage users."""


@user_group.command("create")
@click.option("--display-name", required=True)
@click.option("--user-principal-name", "upn", required=True, help="The sign-in name, e.g. ann@contoso.example.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for when not given (8+ characters, three of: lower, upper, digit, symbol).",
)
@click.option("--mail-nickname", help="Defaults to the part of the user principal name before the @.")
@click.option(
    "--force-change-password-next-sign-in",
    "force_change",
    is_flag=True,
    help="The user must change the password on the login page before any token is issued.",
)
@click.pass_context
def user_create(
    ctx: click.Context, display_name: str, upn: str, password: str, mail_nickname: str | None, force_change: bool
) -> None:
    body: dict[str, Any] = {
        "accountEnabled": True,
        "displayName": display_name,
        "userPrincipalName": upn,
        "passwordProfile": {"password": password, "forceChangePasswordNextSignIn": force_change},
    }
    if mail_nickname:
        body["mailNickname"] = mail_nickname
    print_result(_profile(ctx).graph("POST", "/users", body))


@user_group.command("list")
@click.option("--display-name", help="Users whose display name starts with this.")
@click.option("--upn", help="The user with this user principal name.")
@click.pass_context
def user_list(ctx: click.Context, display_name: str | None, upn: str | None) -> None:
    query = ""
    if upn:
        query = f"?$filter=userPrincipalName eq '{_quote(upn)}'"
    elif display_name:
        query = f"?$filter=startswith(displayName,'{_quote(display_name)}')"
    print_result(_profile(ctx).graph("GET", f"/users{query}")["value"])


@user_group.command("show")
@click.option("--id", "ident", required=True, help="Object id or user principal name.")
@click.pass_context
def user_show(ctx: click.Context, ident: str) -> None:
    print_result(find_user(_profile(ctx), ident))


@user_group.command("update")
@click.option("--id", "ident", required=True, help="Object id or user principal name.")
@click.option("--display-name")
@click.option("--account-enabled", type=click.BOOL, help="false signs the user out everywhere and refuses sign-in.")
@click.option("--password", help="A new password (every refresh token of the user stops working).")
@click.option(
    "--force-change-password-next-sign-in",
    "force_change",
    type=click.BOOL,
    help="true: no token until the user changes the password on the login page.",
)
@click.pass_context
def user_update(
    ctx: click.Context,
    ident: str,
    display_name: str | None,
    account_enabled: bool | None,
    password: str | None,
    force_change: bool | None,
) -> None:
    profile = _profile(ctx)
    user = find_user(profile, ident)
    body: dict[str, Any] = {}
    if display_name is not None:
        body["displayName"] = display_name
    if account_enabled is not None:
        body["accountEnabled"] = account_enabled
    if password is not None:
        body["passwordProfile"] = {"password": password}
    if force_change is not None:
        body.setdefault("passwordProfile", {})["forceChangePasswordNextSignIn"] = force_change
    if not body:
        fail(
            "nothing to update: give --display-name, --account-enabled, --password or "
            "--force-change-password-next-sign-in"
        )
    profile.graph("PATCH", f"/users/{user['id']}", body)


@user_group.command("delete")
@click.option("--id", "ident", required=True, help="Object id or user principal name.")
@click.pass_context
def user_delete(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    profile.graph("DELETE", f"/users/{find_user(profile, ident)['id']}")


@ad.group("group")
def group_group() -> None:
    """Manage security groups; role assignments to a group apply to its members."""


@group_group.command("create")
@click.option("--display-name", required=True)
@click.option("--mail-nickname", required=True)
@click.option("--description")
@click.pass_context
def group_create(ctx: click.Context, display_name: str, mail_nickname: str, description: str | None) -> None:
    body: dict[str, Any] = {
        "displayName": display_name,
        "mailNickname": mail_nickname,
        "mailEnabled": False,
        "securityEnabled": True,
    }
    if description:
        body["description"] = description
    print_result(_profile(ctx).graph("POST", "/groups", body))


@group_group.command("list")
@click.option("--display-name", help="Groups whose display name starts with this.")
@click.pass_context
def group_list(ctx: click.Context, display_name: str | None) -> None:
    query = f"?$filter=startswith(displayName,'{_quote(display_name)}')" if display_name else ""
    print_result(_profile(ctx).graph("GET", f"/groups{query}")["value"])


@group_group.command("show")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.pass_context
def group_show(ctx: click.Context, ident: str) -> None:
    print_result(find_group(_profile(ctx), ident))


@group_group.command("delete")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.pass_context
def group_delete(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    profile.graph("DELETE", f"/groups/{find_group(profile, ident)['id']}")


@group_group.group("member")
def member_group() -> None:
    """Manage a group's members (users, service principals, groups)."""


def _member_id(ident: str) -> str:
    if not _GUID.match(ident):
        fail(f"--member-id must be an object id, got '{ident[:80]}'")
    return ident.lower()


@member_group.command("add")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.option("--member-id", required=True, help="The member's object id.")
@click.pass_context
def member_add(ctx: click.Context, ident: str, member_id: str) -> None:
    profile = _profile(ctx)
    group = find_group(profile, ident)
    ref = f"{profile.endpoints['graph']}/v1.0/directoryObjects/{_member_id(member_id)}"
    profile.graph("POST", f"/groups/{group['id']}/members/$ref", {"@odata.id": ref})


@member_group.command("remove")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.option("--member-id", required=True, help="The member's object id.")
@click.pass_context
def member_remove(ctx: click.Context, ident: str, member_id: str) -> None:
    profile = _profile(ctx)
    group = find_group(profile, ident)
    profile.graph("DELETE", f"/groups/{group['id']}/members/{_member_id(member_id)}/$ref")


@member_group.command("list")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.pass_context
def member_list(ctx: click.Context, ident: str) -> None:
    profile = _profile(ctx)
    group = find_group(profile, ident)
    print_result(profile.graph("GET", f"/groups/{group['id']}/members")["value"])


@member_group.command("check")
@click.option("--group", "-g", "ident", required=True, help="Object id or display name.")
@click.option("--member-id", required=True, help="The member's object id.")
@click.pass_context
def member_check(ctx: click.Context, ident: str, member_id: str) -> None:
    """Whether the object is in the group, directly or through nested groups."""
    profile = _profile(ctx)
    group = find_group(profile, ident)
    found = profile.graph(
        "POST", f"/directoryObjects/{_member_id(member_id)}/checkMemberGroups", {"groupIds": [group["id"]]}
    )
    print_result({"value": group["id"] in found["value"]})
