"""The `lanyard` command. Commands mirror az's names, flags and JSON output."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from lanyard.cli.ad import ad
from lanyard.cli.arm import COMMANDS
from lanyard.cli.audit import audit
from lanyard.cli.context import CliError, Profile, print_json
from lanyard.cli.deployment import deployment
from lanyard.cli.doctor import doctor
from lanyard.cli.keys import kek, keys
from lanyard.cli.keyvault import keyvault
from lanyard.cli.lifecycle import down, status
from lanyard.cli.logs import logs
from lanyard.cli.output import add_output_options
from lanyard.config import load_settings, resolve_home
from lanyard.core.errors import LanyardError

DEFAULT_AGENT_HOME = "~/.lanyard-agent"  # beside, never inside, a platform's ~/.lanyard


@click.group()
@click.option("--home", envvar="LANYARD_HOME", help="Platform home folder (default ~/.lanyard).")
@click.version_option(package_name="lanyard")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Lanyard: managed identities on your own machines."""
    ctx.obj = {"home": resolve_home(home)}


@cli.command()
@click.option("--home", "up_home", help="Platform home folder (default $LANYARD_HOME or ~/.lanyard).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1, which also binds ::1).")
@click.option("--port", type=int, default=None, help="HTTPS port (default 8443; 0 picks a free port).")
@click.option("--database", default=None, help="SQLAlchemy URL (default: SQLite in the home).")
@click.option("--token-lifetime", type=int, default=None, help="Access-token lifetime in seconds.")
@click.option("--public-host", default=None, help="Host name clients use to reach this server.")
@click.option("--agent-port", type=int, default=None, help="Port of the local host agent (default 0: a free one).")
@click.option(
    "--public-url",
    default=None,
    help="https://host:port clients use when nodes sit behind a load balancer (every node must agree).",
)
@click.option("--workers", type=int, default=None, help="Server processes on this machine sharing the port.")
@click.option("--worker-of", type=int, default=None, hidden=True)
@click.option("--no-agent", is_flag=True, help="Do not start a host agent for this machine.")
@click.option(
    "--detach",
    is_flag=True,
    help="Run in the background (output to <home>/logs/console.log); return once it is ready.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="With --detach: seconds to wait for it to be ready before stopping it and saying why.",
)
@click.option("--detached-child", is_flag=True, hidden=True)
@click.option(
    "--audit-file",
    default=None,
    help="Also write the audit trail to this JSON-lines file (or $LANYARD_AUDIT_FILE); if it fails, grants fail.",
)
@click.pass_context
def up(
    ctx: click.Context,
    up_home: str | None,
    host: str | None,
    port: int | None,
    database: str | None,
    token_lifetime: int | None,
    public_host: str | None,
    agent_port: int | None,
    public_url: str | None,
    workers: int | None,
    worker_of: int | None,
    no_agent: bool,
    detach: bool,
    wait_seconds: float,
    detached_child: bool,
    audit_file: str | None,
) -> None:
    """Start the platform in the foreground (Ctrl-C or SIGTERM stops it), or with --detach in the
    background (`lanyard down` stops it)."""
    from lanyard.observe import multiproc
    from lanyard.observe.logs import configure as configure_logging

    home = str(up_home or ctx.find_root().obj["home"])
    settings = load_settings(
        home=home,
        host=host,
        port=port,
        database=database,
        token_lifetime=token_lifetime,
        public_host=public_host,
        agent=not no_agent,
        agent_port=agent_port,
        public_url=public_url,
        workers=workers,
        audit_file=audit_file,
    )
    if detach:
        from lanyard.cli.lifecycle import start_detached
        from lanyard.server.banner import show_banner

        argv = [sys.executable, "-m", "lanyard", "up", "--home", str(settings.home), "--detached-child"]
        for name, value in ctx.params.items():
            skip = name in ("up_home", "detach", "wait_seconds", "detached_child", "worker_of")
            if skip or value is None or value is False:
                continue
            argv += [f"--{name.replace('_', '-')}"] if value is True else [f"--{name.replace('_', '-')}", str(value)]
        show_banner(start_detached(settings.home, argv, wait_seconds), settings.home)
        return
    configure_logging(settings.home, settings.log_level)
    if worker_of is not None:
        multiproc.enable(settings.home, fresh=False)
        from lanyard.server.up import serve_worker

        sys.exit(serve_worker(settings, worker_of))
    from lanyard.server.homelock import HomeLock

    lock = HomeLock.acquire(settings.home)  # before anything touches the home's files
    early = None
    if settings.agent:
        from lanyard.server.agent_launch import start_early

        early = start_early(settings.home, settings.agent_port)  # boots while the server imports
    if settings.workers > 1:
        multiproc.enable(settings.home, fresh=True)  # after the agent started: it keeps its own
    from lanyard.server.up import serve

    sys.exit(serve(settings, early_agent=early, home_lock=lock, banner=not detached_child))


@cli.command("agent")
@click.option(
    "--home",
    "agent_home",
    envvar="LANYARD_AGENT_HOME",
    default=DEFAULT_AGENT_HOME,
    show_default=True,
    help="The agent's own folder (host key, control socket); or $LANYARD_AGENT_HOME. Not a platform's home.",
)
@click.option("--server", help="The platform's HTTPS base URL (its authority).")
@click.option("--server-file", help="Read --server from this file once it appears (used by `lanyard up`).")
@click.option("--ca", "ca_file", required=True, help="The platform CA certificate (PEM).")
@click.option("--ca-bundle", help="Public roots plus the platform CA, for workloads (default: --ca).")
@click.option(
    "--join",
    "join_token",
    envvar="LANYARD_JOIN_TOKEN",
    help="A one-time join token (first start only; or $LANYARD_JOIN_TOKEN, which `ps` does not show).",
)
@click.option("--port", type=int, default=0, show_default=True, help="Port of the local token endpoint.")
@click.option("--name", default=None, help="This host's name (default: the hostname).")
@click.option(
    "--host-cert-lifetime",
    type=float,
    default=None,
    envvar="LANYARD_HOST_CERT_LIFETIME",
    help="Seconds this host's own certificate lives (default a year); renewed at half its life.",
)
@click.option(
    "--workload-uids",
    default=None,
    envvar="LANYARD_WORKLOAD_UIDS",
    help="FIRST-LAST: the uids a root agent gives workloads, one per app, slot or VM (default 900000000-900099999).",
)
def agent_command(
    agent_home: str,
    server: str | None,
    server_file: str | None,
    ca_file: str,
    ca_bundle: str | None,
    join_token: str | None,
    port: int,
    name: str | None,
    host_cert_lifetime: float | None,
    workload_uids: str | None,
) -> None:
    """Run a host agent: the local token service and workload runner for this machine."""
    import socket

    from lanyard.agent.credential import DEFAULT_LIFETIME
    from lanyard.agent.isolation import DEFAULT_UID_RANGE, parse_uid_range
    from lanyard.agent.main import AgentOptions, read_server_file, run_agent
    from lanyard.config import load_audit_settings, load_limit_settings, log_level
    from lanyard.observe import multiproc
    from lanyard.observe.logs import configure as configure_logging

    home = Path(agent_home).expanduser().resolve()
    configure_logging(home, log_level())
    multiproc.disable_for_child(os.environ)  # an agent started by hand from a worker's shell
    try:
        uid_range = parse_uid_range(workload_uids) if workload_uids else DEFAULT_UID_RANGE
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workload-uids") from exc
    if server_file:
        server = read_server_file(Path(server_file))
    sys.exit(
        run_agent(
            AgentOptions(
                home=home,
                server=server,
                ca_file=str(Path(ca_file).resolve()),
                ca_bundle=str(Path(ca_bundle or ca_file).resolve()),
                join_token=join_token,
                port=port,
                name=name or socket.gethostname(),
                host_cert_lifetime=_positive(host_cert_lifetime, DEFAULT_LIFETIME, "--host-cert-lifetime"),
                workload_uids=uid_range,
                limits=load_limit_settings(),  # LANYARD_* limits, the same names `lanyard up` reads
                audit=load_audit_settings(),  # LANYARD_AUDIT*, as `lanyard up` reads them
            )
        )
    )


@cli.group()
def account() -> None:
    """The platform this CLI talks to, and tokens from it."""


@account.command("show")
@click.pass_context
def account_show(ctx: click.Context) -> None:
    profile = Profile.load(ctx.find_root().obj["home"])
    ep = profile.endpoints
    print_json(
        {
            "environmentName": "Lanyard",
            "homeTenantId": ep["tenant_id"],
            "id": ep["subscription_id"],
            "isDefault": True,
            "name": "Lanyard subscription",
            "state": "Enabled",
            "tenantId": ep["tenant_id"],
            "user": {"name": ep["admin"]["client_id"], "type": "servicePrincipal"},
        }
    )


@account.command("get-access-token")
@click.option("--resource", default=None)
@click.option("--scope", default=None)
@click.pass_context
def get_access_token(ctx: click.Context, resource: str | None, scope: str | None) -> None:
    profile = Profile.load(ctx.find_root().obj["home"])
    target = scope[: -len("/.default")] if scope and scope.endswith("/.default") else scope
    target = target or resource or "https://management.core.windows.net/"
    token = profile.credential.get_token(target if target.endswith("/.default") else f"{target}/.default")
    print_json(
        {
            "accessToken": token.token,
            "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(token.expires_on)),
            "expires_on": token.expires_on,
            "subscription": profile.endpoints["subscription_id"],
            "tenant": profile.tenant_id,
            "tokenType": "Bearer",
        }
    )


cli.add_command(ad)
cli.add_command(keyvault)
cli.add_command(keys)
cli.add_command(audit)
cli.add_command(kek)
cli.add_command(status)
cli.add_command(down)
cli.add_command(logs)
cli.add_command(doctor)
cli.add_command(deployment)
for command in COMMANDS:
    cli.add_command(command)  # type: ignore[arg-type]
add_output_options(cli)


# az takes several values after one flag (`--settings A=1 B=2`); click wants the flag repeated.
MULTI_VALUE_OPTIONS = frozenset(
    {
        "--settings",
        "--identities",
        "--assign-identity",
        "--setting-names",
        "--ids",
        "--secret-permissions",
        "--tags",
        "--parameters",
    }
)


def expand_multi_value_options(argv: list[str]) -> list[str]:
    out: list[str] = []
    current: str | None = None
    seen_value = False
    for index, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[index:])
            break
        if arg.startswith("-"):
            current, seen_value = (arg if arg in MULTI_VALUE_OPTIONS else None), False
        elif current is not None:
            if seen_value:
                out.append(current)
            seen_value = True
        out.append(arg)
    return out


def _positive(value: float | None, default: float, name: str) -> float:
    if value is None:
        return default
    if not (value == value and 10 <= value <= 10 * 365 * 86400):  # NaN, too short, absurd
        raise CliError(f"{name} must be 10 seconds to 10 years")
    return value


def main() -> None:
    try:
        cli.main(args=expand_multi_value_options(sys.argv[1:]), standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (CliError, LanyardError) as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.exit(1)


__all__ = ["cli", "main"]
