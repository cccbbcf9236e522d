#!/usr/bin/env python3
"""Token-minting and metadata benchmark: goals G3 and G7 of docs/performance.md.

    python bench/mint.py --smoke [--out DIR]   # ~1 minute: correctness + floors at half strength (CI)
    python bench/mint.py --full  [--out DIR]   # ~9 minutes: longer rounds, the figures to quote

Measured in one run, servers pinned to core 0 and wrk to core 1:
  ceilings  RSA-2048 sign/s on one core (python `cryptography`, and node for context);
            a bare Starlette/uvicorn app over http and over https
  lanyard   token endpoint (client assertion, client secret), JWKS, OpenID discovery
  peer      node oidc-provider's token endpoint (private_key_jwt, client_secret_post), over https

Exit status: 1 on a correctness failure (a target that does not answer like the real thing, or
errors under load); 3 in --smoke on a required ratio below half its floor; in --full, 2 when a
goal is below its floor. A missing wrk, node or oidc-provider is reported, not failed.
"""

from __future__ import annotations

import sys

from benchkit.venv import use_repo_venv

use_repo_venv()

import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import httpx  # noqa: E402

from benchkit import report, script  # noqa: E402
from benchkit.harness import (  # noqa: E402
    SERVER_CORE,
    HttpTarget,
    Sample,
    Server,
    Target,
    ensure_wrk,
    free_port,
    log,
    pinned_json,
    reference_command,
    run_wrk,
    self_signed_tls,
    wait_http,
)
from benchkit.lanyard import start_lanyard, unavailable_reason  # noqa: E402
from benchkit.peer import SCRIPTS, ensure_oidc_provider, node_binary, start_peer  # noqa: E402
from benchkit.services import TokenService, verify_service  # noqa: E402
from benchkit.tokens import CheckFailed  # noqa: E402


@dataclass(frozen=True)
class Mode(script.Mode):
    connections: int


MODES = {
    "smoke": Mode("smoke", warm_up_s=1, rounds=2, seconds=2, connections=32),
    "full": Mode("full", warm_up_s=3, rounds=5, seconds=10, connections=32),
}

# Target names, used by the goal definitions below.
RSA_PY, RSA_NODE = "rsa-2048 sign (python)", "rsa-2048 sign (node)"
BARE_HTTP, BARE_HTTPS = "bare starlette http", "bare starlette https"
LY_ASSERT, LY_SECRET = "lanyard token (assertion)", "lanyard token (secret)"
LY_JWKS, LY_DISCO = "lanyard jwks", "lanyard discovery"
PEER_ASSERT, PEER_SECRET = "oidc-provider token (assertion)", "oidc-provider token (secret)"
# G14: the same grants on a second platform started with LANYARD_AUDIT=off, rotated in the same run.
OFF_ASSERT, OFF_SECRET = "lanyard token (assertion, audit off)", "lanyard token (secret, audit off)"


def goals(bare: str) -> list[report.GoalSpec]:
    """G3 and G7. `bare` is the reference on Lanyard's own scheme, so TLS cost is on both sides."""
    return [
        report.GoalSpec(
            "G3",
            "token minting through the directory's token endpoint",
            [
                report.RatioSpec("token (assertion) / RSA sign", LY_ASSERT, RSA_PY, target=0.60, floor=0.40),
                report.RatioSpec(
                    "token (assertion) / oidc-provider (private_key_jwt)",
                    LY_ASSERT,
                    PEER_ASSERT,
                    target=1.5,
                    floor=1.0,
                ),
                report.RatioSpec("token (secret) / RSA sign", LY_SECRET, RSA_PY),
                report.RatioSpec("token (secret) / oidc-provider (client_secret_post)", LY_SECRET, PEER_SECRET),
                report.RatioSpec("oidc-provider (private_key_jwt) / node RSA sign", PEER_ASSERT, RSA_NODE),
            ],
        ),
        report.GoalSpec(
            "G14",
            "token minting with the audit trail on (group commit) vs off",
            [
                report.RatioSpec("token (assertion): audit on / off", LY_ASSERT, OFF_ASSERT, target=0.90, floor=0.70),
                report.RatioSpec("token (secret): audit on / off", LY_SECRET, OFF_SECRET, target=0.90, floor=0.70),
            ],
        ),
        report.GoalSpec(
            "G7",
            "JWKS and discovery documents",
            [
                report.RatioSpec(f"jwks / {bare}", LY_JWKS, bare, target=0.80, floor=0.50),
                report.RatioSpec(f"discovery / {bare}", LY_DISCO, bare, target=0.80, floor=0.50),
                report.RatioSpec(f"jwks / {BARE_HTTP}", LY_JWKS, BARE_HTTP),
                report.RatioSpec(f"{BARE_HTTPS} / {BARE_HTTP} (cost of TLS)", BARE_HTTPS, BARE_HTTP),
            ],
        ),
    ]


@dataclass
class Run(script.BenchRun[Mode]):
    """The shared run state, plus the scheme Lanyard serves and which targets are the (optional) peer."""

    lanyard_scheme: str = "https"
    peer_names: set[str] = field(default_factory=set)

    def add_http(self, name: str, target: HttpTarget) -> None:
        self.add_wrk(name, target, self.mode.connections)

    def add_cpu(self, name: str, cmd: list[str]) -> None:
        self.targets.append(Target(name, _pinned_rate(cmd), warm_up=False))


def _pinned_rate(cmd: list[str]) -> Callable[[float], Sample]:
    """A CPU ceiling: run the probe on the server core for the round's duration, read its rate."""

    def measure(seconds: float) -> Sample:
        return Sample(rate=float(pinned_json([*cmd, str(seconds)], SERVER_CORE, seconds + 60)["rate"]))

    return measure


# ------------------------------------------------------------------------------------------ setup


def setup_ceilings(run: Run) -> None:
    run.add_cpu(RSA_PY, [sys.executable, "-m", "benchkit.rsa_ceiling"])
    node = node_binary()
    if node:
        run.add_cpu(RSA_NODE, [node, str(SCRIPTS / "rsa_ceiling.mjs")])


def setup_reference(run: Run) -> None:
    """The bare Starlette app, once over http and once over https with a throwaway certificate."""
    cert, key = self_signed_tls(run.workdir / "reference")
    for name, tls in (
        (BARE_HTTP, []),
        (BARE_HTTPS, ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]),
    ):
        port = free_port()
        scheme = "https" if tls else "http"
        url = f"{scheme}://127.0.0.1:{port}/"
        server = Server(name, reference_command(port, *tls), run.logdir / f"{name.replace(' ', '-')}.log").start()
        run.servers.append(server)
        wait_http(url, 30, server)
        body = httpx.get(url, verify=str(cert) if tls else False).json()
        if body.get("status") != "ok":
            raise CheckFailed(f"{name}: unexpected body {body}")
        run.add_http(name, HttpTarget(url))


def setup_lanyard(run: Run, home: Path) -> None:
    reason = unavailable_reason()
    if reason:
        run.notes.append(f"lanyard skipped: {reason}")
        log(f"lanyard skipped: {reason}")
        return
    log("starting lanyard up")
    lanyard = start_lanyard(home, run.logdir)
    run.servers.append(lanyard.server)
    run.lanyard_scheme = urlsplit(lanyard.endpoints["authority"]).scheme
    service = lanyard.service
    check_service(run, service, lanyard.ca)
    probe_stalls(run, LY_JWKS, HttpTarget(service.jwks_url))
    run.add_http(LY_ASSERT, service.assertion_target())
    run.add_http(LY_SECRET, service.secret_target())
    run.add_http(LY_JWKS, HttpTarget(service.jwks_url))
    run.add_http(LY_DISCO, HttpTarget(service.discovery_url))
    log("starting lanyard up with LANYARD_AUDIT=off (G14)")
    off = start_lanyard(home.with_name("lanyard-home-audit-off"), run.logdir, {"LANYARD_AUDIT": "off"}, "lanyard-off")
    run.servers.append(off.server)
    check_service(run, off.service, off.ca)
    run.add_http(OFF_ASSERT, off.service.assertion_target())
    run.add_http(OFF_SECRET, off.service.secret_target())


def probe_stalls(run: Run, name: str, target: HttpTarget) -> None:
    """One connection, one second: a ~40 ms median is Nagle's algorithm meeting delayed ACKs, which
    caps a server at ~25 req/s per connection whatever its code does. A classic cause: handing
    uvicorn a socket made with socket.socket(), whose proto 0 makes asyncio skip TCP_NODELAY."""
    if run.wrk is None:
        return
    sample = run_wrk(run.wrk, target, 1, 1, run.workdir)
    run.meta[f"{name} p50 at 1 connection (ms)"] = round(sample.p50_ms or 0, 3)
    if (sample.p50_ms or 0) > 20:
        run.notes.append(
            f"{name}: p50 {sample.p50_ms:.0f} ms at 1 connection - a Nagle/delayed-ACK stall; "
            "set TCP_NODELAY on the listening socket (inherited by accepted ones)"
        )


def check_service(run: Run, service: TokenService, ca: str | bool) -> None:
    claims = verify_service(service, ca)
    log(f"{service.label}: discovery, JWKS and both token grants verified")
    run.meta[f"{service.label} token claims (assertion)"] = sorted(claims.get("client assertion", {}))
    with httpx.Client(verify=ca, timeout=10) as client:
        advertised = client.get(service.discovery_url).json().get("token_endpoint")
    if advertised != service.token_endpoint:
        run.notes.append(
            f"{service.label} discovery advertises token_endpoint {advertised}, benchmarked {service.token_endpoint}"
        )


def setup_peer(run: Run) -> None:
    if node_binary() is None:
        run.notes.append("oidc-provider skipped: node not found")
        return
    module, version = ensure_oidc_provider()
    if module is None:
        run.notes.append(f"oidc-provider skipped: {version}")
        return
    run.meta["oidc-provider"] = version
    log(f"starting oidc-provider {version}")
    try:
        peer = start_peer(module, run.workdir, run.logdir)
    except (RuntimeError, TimeoutError, OSError) as exc:
        run.notes.append(f"oidc-provider skipped: could not start: {exc}")
        return
    run.servers.append(peer.server)
    try:
        check_service(run, peer.service, False)
    except (CheckFailed, httpx.HTTPError) as exc:
        run.notes.append(f"oidc-provider skipped: its answers failed the checks: {exc}")
        return
    run.notes.extend(peer.service.notes)
    run.peer_names.update({PEER_ASSERT, PEER_SECRET})
    run.add_http(PEER_ASSERT, peer.service.assertion_target())
    run.add_http(PEER_SECRET, peer.service.secret_target())


# ------------------------------------------------------------------------------------------- meta


def describe(run: Run) -> dict[str, Any]:
    packages = ("cryptography", "starlette", "uvicorn", "uvloop", "httptools", "orjson")
    return {
        **script.describe_wrk_run(run, run.mode.connections, packages),
        "node": script.first_line(["node", "--version"]) if node_binary() else "absent",
    }


# ------------------------------------------------------------------------------------------- main


def measure(run: Run, home: Path) -> dict[str, list[Sample]]:
    """Set every target up (a setup failure of Lanyard or the reference is a correctness failure),
    then rotate them. Servers are stopped by the caller whatever happens here."""
    setup_ceilings(run)
    try:
        setup_reference(run)
        setup_lanyard(run, home)
    except (CheckFailed, RuntimeError, TimeoutError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        run.failures.append(str(exc))
        return {}
    setup_peer(run)
    if run.wrk is None:
        run.notes.append("wrk unavailable: only correctness and the RSA ceiling were measured")
    return script.rotate(run)


def judge(run: Run, samples: dict[str, list[Sample]], results: list[report.GoalResult]) -> int:
    """Turn findings into an exit status (see the module docstring): --smoke fails on ratios only."""
    script.sort_invalid(run, samples, informational=run.peer_names)
    required = [r for g in results for r in g.ratios if r.spec.floor is not None]
    return script.exit_status(run, results, lambda: any(r.below_half_floor for r in required))


def main(argv: list[str]) -> int:
    args = script.parse_args(argv, __doc__)
    mode = script.chosen_mode(MODES, args)
    out_dir: Path = args.out.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="lanyard-bench-"))
    run = Run(mode, ensure_wrk(), workdir, out_dir / "logs")
    run.meta.update(describe(run))
    samples = script.measure_and_clean_up(run, lambda: measure(run, workdir / "lanyard-home"))

    results = report.evaluate(goals(BARE_HTTPS if run.lanyard_scheme == "https" else BARE_HTTP), samples)
    status = judge(run, samples, results)
    script.print_summary(run, samples, results, limits=False)
    payload = report.to_json(run.meta, samples, results, run.notes, run.failures)
    markdown = report.to_markdown(run.meta, samples, results, run.notes, run.failures)
    return script.write_results(out_dir, f"mint-{mode.name}", payload, markdown, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
