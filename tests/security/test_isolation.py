"""The attacks of one workload on its neighbours and on the platform, each now failing for the attacker.

A root agent runs every app and VM under a uid of its own and serves a token only to a process of the
workload the identity is bound to. Each test plays the attacker with real processes: a workload run
through `lanyard webapp run` / `vm run`, the test process itself (root, not started by the agent) and a
process under uid 65534 (nobody).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROBE, RunningPlatform, cli_json, probe_command, probe_results, run_cli

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="workload isolation needs a root agent and setpriv"
)
ARM = "https://management.azure.com"
TOKEN_PATH = f"?api-version=2019-08-01&resource={ARM}"
NOBODY = 65534


@pytest.fixture(scope="module")
def boxes(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "iso-rg", "-l", "westus")
    made = {
        name: cli_json(home, "webapp", "create", "-g", "iso-rg", "-n", name, "--assign-identity", "[system]")
        for name in ("iso-a", "iso-b", "iso-c")
    }
    made["iso-open"] = cli_json(
        home,
        "webapp",
        "create",
        "-g",
        "iso-rg",
        "-n",
        "iso-open",
        "--assign-identity",
        "[system]",
        "--tags",
        "lanyard.callerAttestation=header",
    )
    made["iso-vm"] = cli_json(home, "vm", "create", "-g", "iso-rg", "-n", "iso-vm", "--assign-identity", "[system]")
    return made


def app(name: str) -> list[str]:
    return ["webapp", "run", "-g", "iso-rg", "-n", name]


def run_probe(platform: RunningPlatform, target: list[str], actions: list[dict[str, Any]]) -> list[Any]:
    result = subprocess.run(probe_command(platform.home, target, actions), capture_output=True, text=True, timeout=180)
    results = probe_results(result.stdout, result.stderr)
    for r in results:
        assert r["ok"], r["error"]
    return [r["value"] for r in results]


def outsider(actions: list[dict[str, Any]], uid: int | None = None) -> list[Any]:
    """The probe run by a process the agent did not start: this test's own (root), or under `uid`."""
    command = [sys.executable, PROBE, json.dumps(actions)]
    if uid is not None:
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
    return [r["value"] for r in probe_results(result.stdout, result.stderr)]


@contextmanager
def running(platform: RunningPlatform, target: list[str], folder: Path, names: list[str]) -> Iterator[dict[str, Any]]:
    """A workload that leaks `names` from its environment (and its pid) into `folder`, then idles."""
    leak, stop = folder / f"leak-{target[-1]}", folder / f"stop-{target[-1]}"
    actions = [{"kind": "write-env", "names": names, "path": str(leak)}, {"kind": "wait-file", "path": str(stop)}]
    process = subprocess.Popen(
        probe_command(platform.home, target, actions), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not leak.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leak.exists(), process.communicate(timeout=30)
        time.sleep(0.05)  # the leak file is written in one go, but give the writer a moment to close it
        yield json.loads(leak.read_text())
    finally:
        stop.write_text("stop")
        try:
            process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()


def token_request(leaked: dict[str, Any], count: int = 1) -> dict[str, Any]:
    return {
        "kind": "raw-loop",
        "count": count,
        "base": leaked["IDENTITY_ENDPOINT"],
        "path": TOKEN_PATH,
        "headers": {"X-IDENTITY-HEADER": leaked["IDENTITY_HEADER"]},
    }


def own_request(count: int) -> dict[str, Any]:
    """A workload asking with its own endpoint and header, from its environment."""
    return {
        "kind": "raw-loop",
        "count": count,
        "base_env": "IDENTITY_ENDPOINT",
        "path": TOKEN_PATH,
        "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
    }


def test_workloads_run_under_uids_of_their_own(platform: RunningPlatform, boxes: dict[str, Any]) -> None:
    (a,) = run_probe(platform, app("iso-a"), [{"kind": "ids"}])
    (b,) = run_probe(platform, app("iso-b"), [{"kind": "ids"}])
    (again,) = run_probe(platform, app("iso-a"), [{"kind": "ids"}])
    assert a["uid"] not in (0, os.getuid()) and b["uid"] not in (0, os.getuid())
    assert a["uid"] != b["uid"] and again["uid"] == a["uid"]  # one uid per app, the same on every start
    assert a["groups"] == [] and a["gid"] == a["uid"]
    assert a["home"] != str(Path.home())


def test_a_workload_cannot_read_the_platforms_files(platform: RunningPlatform, boxes: dict[str, Any]) -> None:
    home = platform.home
    secrets = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "endpoints.json" for p in secrets) and any(p.name == "kek" for p in secrets)
    if platform.database is None:  # on SQLite the database is in the home too
        assert any(p.suffix == ".db" for p in secrets)
    assert any("key" in p.name for p in (home / "agent").iterdir())
    (readable, control) = run_probe(
        platform,
        app("iso-a"),
        [
            {"kind": "read-paths", "paths": [str(p) for p in secrets]},
            {"kind": "connect-unix", "path": platform.endpoints["agent"]["socket"]},
        ],
    )
    assert set(readable.values()) == {"PermissionError"}, readable
    assert control == "PermissionError"  # no way to start a process as another app
    for path in [home, *home.rglob("*")]:
        if path.is_symlink() or path.is_socket():
            continue
        mode = path.stat().st_mode & 0o777
        assert path.stat().st_uid == os.geteuid() and mode & 0o077 == 0, f"{path} is {mode:o}"


def test_a_workload_cannot_read_another_workloads_environment(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    with running(platform, app("iso-a"), workload_folder, ["IDENTITY_HEADER"]) as leaked:
        environ = f"/proc/{leaked['pid']}/environ"
        (seen,) = run_probe(platform, app("iso-b"), [{"kind": "read-paths", "paths": [environ]}])
    assert seen == {environ: "PermissionError"}


def test_the_platforms_configuration_does_not_reach_a_workload(
    platform: RunningPlatform, boxes: dict[str, Any]
) -> None:
    result = subprocess.run(
        probe_command(platform.home, app("iso-a"), [{"kind": "env", "names": ["LANYARD_KEK", "KEEP_ME"]}]),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LANYARD_KEK": "do-not-pass-this", "KEEP_ME": "kept"},
    )
    (seen,) = [r["value"] for r in probe_results(result.stdout, result.stderr)]
    assert seen == {"LANYARD_KEK": None, "KEEP_ME": "kept"}


def test_copied_headers_get_nothing_and_each_workload_gets_its_own_tokens(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    """SECURITY F7: 300 connections, three apps under three uids plus processes the agent did not start."""
    names = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"]
    oid = {name: boxes[name]["identity"]["principalId"] for name in ("iso-a", "iso-b", "iso-c")}
    with (
        running(platform, app("iso-b"), workload_folder, names) as b,
        running(platform, app("iso-c"), workload_folder, names) as c,
    ):
        # app A asks with its own header, then with app C's (copied from C's environment)
        own_a, with_c = run_probe(platform, app("iso-a"), [own_request(60), token_request(c, 40)])
        (own_b,) = run_probe(platform, app("iso-b"), [own_request(60)])
        (own_c,) = run_probe(platform, app("iso-c"), [own_request(60)])
        (as_root,) = outsider([token_request(b, 40)])
        (as_nobody,) = outsider([token_request(c, 40)], uid=NOBODY)
    # Every workload's own requests: a token, for its own identity.
    for answer, name in ((own_a, "iso-a"), (own_b, "iso-b"), (own_c, "iso-c")):
        assert answer["statuses"] == {"200": 60} and answer["subjects"] == [oid[name]], (name, answer)
    # Every copied header: refused, whoever copied it.
    for answer in (with_c, as_root, as_nobody):
        assert answer["statuses"] == {"401": 40} and answer["subjects"] == [], answer
    # The audit trail names the attested process of every token served, and every refusal.
    pids = {
        boxes[name]["id"].lower(): answer["pid"]
        for name, answer in (("iso-a", own_a), ("iso-b", own_b), ("iso-c", own_c))
    }
    served, refused = shipped_records(platform, pids, refusals=120)
    assert sum(r["detail"].get("count", 1) for r in served) == 180  # one record may count several grants
    for record in served:
        assert record["detail"]["caller"]["pid"] == pids[record["resource"].lower()], record
        assert record["detail"]["caller"]["uid"] not in (0, NOBODY)
    assert len(refused) == 120 and {r["outcome"] for r in refused} == {"denied"}


def shipped_records(
    platform: RunningPlatform, pids: dict[str, int], refusals: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The agent's token and refusal records for these workloads, once the agent has shipped them."""
    deadline = time.monotonic() + 30
    while True:
        tokens = cli_json(platform.home, "audit", "list", "--action", "agent.token")
        denials = cli_json(platform.home, "audit", "list", "--action", "agent.attestation")
        served = [
            r
            for r in tokens
            if (r.get("resource") or "").lower() in pids
            and (r.get("detail") or {}).get("caller", {}).get("pid") in set(pids.values())
        ]
        refused = [r for r in denials if (r.get("resource") or "").lower() in pids]
        grants = sum(r["detail"].get("count", 1) for r in served)
        if (grants >= 180 and len(refused) >= refusals) or time.monotonic() > deadline:
            return served, refused
        time.sleep(0.5)


def test_the_vm_metadata_listener_serves_only_the_vm(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    target = ["vm", "run", "-g", "iso-rg", "-n", "iso-vm"]
    with running(platform, target, workload_folder, ["AZURE_POD_IDENTITY_AUTHORITY_HOST"]) as vm:
        request = {
            "kind": "raw-loop",
            "count": 5,
            "base": vm["AZURE_POD_IDENTITY_AUTHORITY_HOST"],
            "path": f"/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}",
            "headers": {"Metadata": "true"},
        }
        (as_nobody,) = outsider([request], uid=NOBODY)
        (as_root,) = outsider([request])
    (own,) = run_probe(platform, target, [{**request, "base": "", "base_env": "AZURE_POD_IDENTITY_AUTHORITY_HOST"}])
    assert as_nobody["statuses"] == {"401": 5} and as_root["statuses"] == {"401": 5}
    assert own["statuses"] == {"200": 5} and own["subjects"] == [boxes["iso-vm"]["identity"]["principalId"]]


def test_header_only_attestation_is_a_per_resource_opt_in(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    names = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"]
    with running(platform, app("iso-open"), workload_folder, names) as leaked:
        (copied,) = outsider([token_request(leaked, 3)])
    assert copied["statuses"] == {"200": 3}  # as on Azure: the header alone


def test_a_program_the_workloads_uid_cannot_reach_fails_with_one_line(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    private = workload_folder / "private"
    private.mkdir(mode=0o700)
    program = private / "tool"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o755)
    result = run_cli(platform.home, *app("iso-a"), "--", str(program), check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert str(private) in lines[0] and "mode 0700" in lines[0] and "chmod" in lines[0]


def test_a_named_user_runs_the_workload_and_root_is_refused(platform: RunningPlatform, boxes: dict[str, Any]) -> None:
    (ids,) = run_probe(platform, [*app("iso-a"), "--user", "nobody"], [{"kind": "ids"}])
    assert ids["uid"] == NOBODY
    refused = run_cli(platform.home, *app("iso-a"), "--user", "root", "--", "true", check=False)
    assert refused.returncode != 0 and "owns the platform" in refused.stderr


def test_what_a_workload_leaves_running_is_stopped_when_it_exits(
    platform: RunningPlatform, boxes: dict[str, Any], workload_folder: Path
) -> None:
    pid_file = workload_folder / "daemon.pid"
    result = run_cli(platform.home, *app("iso-a"), "--", "sh", "-c", f"sleep 300 & echo $! > {pid_file}")
    assert result.returncode == 0, result.stderr
    daemon = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{daemon}").exists():
        assert time.monotonic() < deadline, "a child of the workload outlived it"
        time.sleep(0.05)
