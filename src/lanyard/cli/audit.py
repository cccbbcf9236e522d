"""`lanyard audit`: read the audit trail (list) and check its hash chains (verify)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import click

from lanyard.audit.record import verify as verify_chain
from lanyard.cli.context import CliError, Profile
from lanyard.cli.output import print_result

ARM = "https://management.azure.com"
COLUMNS = ("at", "action", "outcome", "principal", "app_id", "resource", "host", "chain", "seq")


def _url(profile: Profile, params: dict[str, str]) -> str:
    base = f"{str(profile.endpoints['arm']).rstrip('/')}/lanyard/v1/audit"
    return f"{base}?{urlencode(params)}" if params else base


def _pages(profile: Profile, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    url: str | None = _url(profile, params)
    while url:
        page = profile.call("GET", url, resource=ARM)
        yield from page.get("value", [])
        url = page.get("nextLink")


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "at": _iso(float(record["at"]))}


@click.group("audit")
def audit() -> None:
    """The audit trail: every token, secret read, control-plane write and credential event."""


@audit.command("list")
@click.option("--principal", help="Object id or app (client) id of the principal.")
@click.option("--resource", help="Part of the resource: an ARM id, vault/secret path, or audience.")
@click.option("--action", help="Action prefix, e.g. token, agent.token, vault, arm.write, credential.")
@click.option("--since", help="From this time on (ISO 8601 or epoch seconds).")
@click.option("--until", help="Before this time (ISO 8601 or epoch seconds).")
@click.option("--top", type=click.IntRange(1, 100_000), default=None, help="At most this many records.")
@click.option("--newest-first", is_flag=True, help="The newest records first (e.g. with --top 20: the last 20).")
@click.pass_context
def list_records(
    ctx: click.Context,
    principal: str | None,
    resource: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    top: int | None,
    newest_first: bool,
) -> None:
    """Records, oldest first (or newest first)."""
    profile = Profile.load(ctx.find_root().obj["home"])
    params = {
        k: v
        for k, v in {
            "principal": principal,
            "resource": resource,
            "action": action,
            "since": since,
            "until": until,
            "order": "newest" if newest_first else None,
        }.items()
        if v
    }
    rows: list[dict[str, Any]] = []
    for record in _pages(profile, params):
        rows.append(_flat(record))
        if top is not None and len(rows) >= top:
            break
    print_result(rows, columns=[c for c in COLUMNS if any(c in r for r in rows)])


@audit.command("verify")
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Walk every chain; exit 1 naming the first record that does not follow its predecessor."""
    profile = Profile.load(ctx.find_root().obj["home"])
    chains: set[str] = set()
    count = 0

    def walked() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in _pages(profile, {"order": "chain"}):
            chains.add(str(record.get("chain")))
            count += 1
            yield record

    broken = verify_chain(walked())
    if broken is not None:
        raise CliError(f"audit chain {broken.chain} is broken at record {broken.seq}: {broken.reason}")
    print_result({"verified": True, "records": count, "chains": len(chains)})
