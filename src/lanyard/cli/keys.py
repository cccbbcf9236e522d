"""`lanyard keys`: the directory's token-signing keys (list, rotate, revoke)."""

from __future__ import annotations

from urllib.parse import quote

import click

from lanyard.cli.context import Profile
from lanyard.cli.output import print_result

ARM = "https://management.azure.com"


def _base(profile: Profile) -> str:
    return f"{str(profile.endpoints['arm']).rstrip('/')}/lanyard/v1/signingKeys"


@click.group("keys")
def keys() -> None:
    """Token-signing keys: pending (published) -> active (signing) -> retired -> removed, or revoked."""


@keys.command("list")
@click.pass_context
def list_keys(ctx: click.Context) -> None:
    """Every key with its state and times (kid, state, created, activates, retires/removes)."""
    profile = Profile.load(ctx.find_root().obj["home"])
    print_result(profile.call("GET", _base(profile), resource=ARM)["value"])


@keys.command("rotate")
@click.option("--immediate", is_flag=True, help="Sign with a new key now (emergency); else after the publish lead.")
@click.pass_context
def rotate(ctx: click.Context, immediate: bool) -> None:
    """Schedule the next key (published now, signing after the publish lead), or sign with it now."""
    profile = Profile.load(ctx.find_root().obj["home"])
    url = f"{_base(profile)}/rotate?immediate={'true' if immediate else 'false'}"
    print_result(profile.call("POST", url, resource=ARM))


@keys.command("revoke")
@click.argument("kid")
@click.pass_context
def revoke(ctx: click.Context, kid: str) -> None:
    """Unpublish a key at once: every resource rejects its tokens, agents drop the ones they cached."""
    profile = Profile.load(ctx.find_root().obj["home"])
    print_result(profile.call("POST", f"{_base(profile)}/{quote(kid, safe='')}/revoke", resource=ARM))


@click.group("kek")
def kek() -> None:
    """The key-encryption key every sealed value in the database is sealed under."""


@kek.command("rotate")
@click.pass_context
def kek_rotate(ctx: click.Context) -> None:
    """Re-seal every value under the platform's current KEK.

    First restart every node with the new key as LANYARD_KEK and the old one as LANYARD_KEK_PREVIOUS
    (or the files `kek` and `kek.previous` in the home); then run this; then drop the old key."""
    profile = Profile.load(ctx.find_root().obj["home"])
    base = str(profile.endpoints["arm"]).rstrip("/")
    print_result(profile.call("POST", f"{base}/lanyard/v1/keyEncryptionKey/reseal", resource=ARM))
