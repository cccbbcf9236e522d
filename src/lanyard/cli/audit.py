"""`lanyard audit`: read the audit trail (list) and check its hash chains (verify)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import click

from lanyard.audit.record import verify as verify_chain
from lanyard.cli.context import CliError, Profile, fail, print_json

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


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def render(rows: Any, output: str) -> None:
    """az-style output: json (default), table (the common columns), tsv (one line per record)."""
    if output == "json" or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        if output == "tsv" and isinstance(rows, list):
            for value in rows:
                sys.stdout.write(_cell(value) + "\n")
            return
        print_json(rows)
        return
    columns = [c for c in COLUMNS if any(c in r for r in rows)] or sorted({k for r in rows for k in r})
    if output == "tsv":
        for r in rows:
            sys.stdout.write("\t".join(_cell(r.get(c)) for c in columns) + "\n")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    sys.stdout.write("  ".join(c.title().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    sys.stdout.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


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
@click.option("-o", "--output", type=click.Choice(["json", "table", "tsv"]), default="json", show_default=True)
@click.option("--query", "query", default=None, help="A JMESPath query applied to the list, as with az.")
@click.pass_context
def list_records(
    ctx: click.Context,
    principal: str | None,
    resource: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    top: int | None,
    output: str,
    query: str | None,
) -> None:
    """Records, oldest first."""
    profile = Profile.load(ctx.find_root().obj["home"])
    params = {
        k: v
        for k, v in {
            "principal": principal,
            "resource": resource,
            "action": action,
            "since": since,
            "until": until,
        }.items()
        if v
    }
    rows: list[dict[str, Any]] = []
    for record in _pages(profile, params):
        rows.append(_flat(record))
        if top is not None and len(rows) >= top:
            break
    result: Any = rows
    if query:
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            result = jmespath.search(query, rows)
        except JMESPathError as exc:
            fail(f"--query is not a valid JMESPath expression: {exc}")
    render(result, output)


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
    print_json({"verified": True, "records": count, "chains": len(chains)})
