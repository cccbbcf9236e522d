"""`lanyard login` / `lanyard logout`: the CLI acting as a person, so their role assignments apply.

Without a sign-in the CLI acts as the admin application (bootstrap: making the first users, groups
and role assignments). The sign-in is kept in the home as `user-session.json` (0600): the refresh
token of Lanyard's own public client, which rotates on every use.
"""

from __future__ import annotations

import base64
import json

import click

from lanyard.cli.context import Profile, fail
from lanyard.cli.output import print_result
from lanyard.client import CredentialError
from lanyard.client.user import UserCredential
from lanyard.directory.clients import LANYARD_CLI


def _profile(ctx: click.Context) -> Profile:
    return Profile.load(ctx.find_root().obj["home"])


def _object_id(response: dict[str, object]) -> str:
    raw = str(response.get("client_info", ""))
    try:
        info = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return ""
    return str(info.get("uid", "")) if isinstance(info, dict) else ""


@click.command("login")
@click.option("--username", "-u", help="Sign in with this name and a password (else: a device code).")
@click.option("--password", "-p", help="Asked for when -u is given without it.")
@click.option("--use-device-code", is_flag=True, help="Sign in in a browser with a code (the default without -u).")
@click.pass_context
def login(ctx: click.Context, username: str | None, password: str | None, use_device_code: bool) -> None:
    """Sign in as a user: every later command acts with that user's tokens."""
    profile = _profile(ctx)
    signin = profile.user_signin()
    try:
        if username and not use_device_code:
            if password is None:
                password = click.prompt("Password", hide_input=True, err=True)
            response = signin.password(username, password)
        else:
            response = signin.device_code(lambda message: click.echo(message, err=True))
    except CredentialError as exc:
        fail(f"sign-in failed: {exc}")
    finally:
        signin.close()
    claims_name = str(response.get("id_token", "")).split(".")
    shown = username or ""
    if len(claims_name) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(claims_name[1] + "=" * (-len(claims_name[1]) % 4)))
            shown = str(payload.get("preferred_username", shown))
        except ValueError:
            pass
    UserCredential.save(profile.session_file, response, shown, _object_id(response), LANYARD_CLI)
    print_result(
        [
            {
                "cloudName": "Lanyard",
                "homeTenantId": profile.tenant_id,
                "id": profile.endpoints["subscription_id"],
                "isDefault": True,
                "tenantId": profile.tenant_id,
                "user": {"name": shown, "type": "user"},
            }
        ]
    )


@click.command("logout")
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Sign out: the refresh token is revoked at the directory and forgotten here."""
    profile = _profile(ctx)
    if not profile.session_file.exists():
        fail("no user is signed in (the CLI acts as the admin application)")
    signin = profile.user_signin()
    try:
        session = UserCredential(profile.session_file, signin).session()
        signin.revoke(str(session["refresh_token"]))
    except CredentialError as exc:
        fail(f"sign-out failed: {exc}")
    finally:
        signin.close()
    profile.session_file.unlink()
