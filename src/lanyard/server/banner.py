"""What `lanyard up` tells a person: progress lines on stderr while a new home is set up, and, once
it is ready, a banner on stdout with everything needed to use it (the same from `up --detach`).

Both are plain writes, not log records: they are for the person at the terminal, and the platform
log keeps its own ready record for `lanyard logs`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from lanyard.config import DEFAULT_HOME


def progress(message: str) -> None:
    sys.stderr.write(f"lanyard up: {message}\n")
    sys.stderr.flush()


def _home_flag(home: Path) -> str:
    """`--home DIR` for a home other than the default, so the printed commands work as pasted."""
    if home == Path(DEFAULT_HOME).expanduser().resolve():
        return ""
    return f" --home {shlex.quote(str(home))}"


def banner(endpoints: dict[str, Any], home: Path) -> str:
    authority = str(endpoints["authority"])
    bundle = shlex.quote(str(endpoints["ca_bundle"]))
    quoted_home = shlex.quote(str(home))
    vault = f"https://<name>.{endpoints['vault_suffix']}"
    agent = endpoints.get("agent") or {}
    rows = [
        ("Authority (Entra ID)", authority),
        ("ARM (control plane)", str(endpoints["arm"])),
        ("Graph", str(endpoints["graph"])),
        ("Key Vault", vault),
        ("Tenant", str(endpoints["tenant_id"])),
        ("Subscription", str(endpoints["subscription_id"])),
    ]
    if agent.get("url"):
        rows.append(("Host agent", f"{agent['url']} (host {agent.get('hostId')})"))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"Lanyard is ready (pid {endpoints.get('pid')}, home {home})", ""]
    lines += [f"  {label + ':':<{width}}{value}" for label, value in rows]
    lines += [
        "",
        "Point the CLI at this home (each new shell):",
        f"  export LANYARD_HOME={quoted_home}        # or: lanyard --home {quoted_home} COMMAND",
        "Point the Azure SDKs and tools at it (trust its CA; the authority for credentials with a secret):",
        f"  export REQUESTS_CA_BUNDLE={bundle} SSL_CERT_FILE={bundle}",
        f"  export AZURE_AUTHORITY_HOST={authority}",
        "Run your code as an app or VM with a managed identity:",
        f"  lanyard{_home_flag(home)} webapp run -g GROUP -n APP -- COMMAND",
        "Stop it:",
        f"  lanyard{_home_flag(home)} down",
    ]
    return "\n".join(lines) + "\n"


def show_banner(endpoints: dict[str, Any], home: Path) -> None:
    sys.stdout.write(banner(endpoints, home))
    sys.stdout.flush()
