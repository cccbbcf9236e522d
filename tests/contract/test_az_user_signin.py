"""The real az CLI signs a person in (`az login -u -p`), `az account get-access-token` prints that
user's token, and on the same machine DefaultAzureCredential (outside any workload: it falls through
to AzureCliCredential) reads a secret the user was granted, RBAC deciding on the user.

msal's password flow asks `https://{host}/common/userrealm/...` on port 443 whatever the authority's
port, so this test runs its own platform on port 443 inside a network namespace it creates (loopback
only, a name unique to this run), and runs az there. The az CLI comes from .cache/az-venv (installed
by scripts/ensure-az); without it the test is skipped, except under CI, where it fails."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanyard.testing.platform import start as start_lanyard
from tests.conftest import platform_env

REPO = Path(__file__).resolve().parents[2]
AZ = REPO / ".cache" / "az-venv" / "bin" / "az"
PASSWORD = "Az-Login-Pa55word"
SECRET_READER = """
import sys
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
credential = DefaultAzureCredential(exclude_shared_token_cache_credential=True)
print(SecretClient(sys.argv[1], credential).get_secret("shared").value)
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run this test: scripts/ensure-az installs az)")
    pytest.skip(reason)


class Namespaced:
    """A `lanyard up` on port 443 inside a fresh network namespace, and commands run in it."""

    def __init__(self, name: str, home: Path, config_dir: Path) -> None:
        self.name = name
        self.home = home
        self.config_dir = config_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REQUESTS_CA_BUNDLE": str(self.endpoints.get("ca_bundle", "")),
            "AZURE_CONFIG_DIR": str(self.config_dir),
            "AZURE_CORE_INSTANCE_DISCOVERY": "false",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
            "PATH": f"{AZ.parent}:{os.environ.get('PATH', '')}",
        }

    def run(self, *command: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *command],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command[:3]} failed: {result.stderr[-2000:]}")
        return result

    def lanyard(self, *args: str) -> Any:
        out = self.run(sys.executable, "-m", "lanyard", "--home", str(self.home), *args).stdout
        return json.loads(out) if out.strip() else None

    def az(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(AZ), *args, check=check)

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        started = start_lanyard(
            self.home, env=platform_env(), log_name="server.log", port=443, launcher=("ip", "netns", "exec", self.name)
        )
        self.process, self.endpoints = started.process, started.endpoints

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


@pytest.fixture(scope="module")
def on_443(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespaced]:
    if not AZ.exists():
        _unavailable(f"the az CLI is not installed at {AZ}")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        _unavailable("network namespaces need root and iproute2")
    base = tmp_path_factory.mktemp("az-user")
    ns = Namespaced(f"lanyard-people-{os.getpid()}", base / "home", base / "azure")
    try:
        ns.start()
        yield ns
    finally:
        ns.stop()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_az_login_as_a_user_then_default_azure_credential_reads_a_granted_secret(on_443: Namespaced) -> None:
    ns = on_443
    upn = f"dev-{uuid.uuid4().hex[:6]}@az.example"
    user = ns.lanyard(
        "ad", "user", "create", "--display-name", "Dev Eloper", "--user-principal-name", upn, "--password", PASSWORD
    )
    ns.lanyard("group", "create", "-n", "az-rg", "-l", "westus")
    vault = ns.lanyard("keyvault", "create", "-n", "az-kv", "-g", "az-rg", "--enable-rbac-authorization", "true")
    ns.lanyard(
        "role",
        "assignment",
        "create",
        "--assignee",
        ns.endpoints["admin"]["client_id"],
        "--role",
        "Key Vault Secrets Officer",
        "--scope",
        vault["id"],
    )
    ns.lanyard("keyvault", "secret", "set", "--vault-name", "az-kv", "-n", "shared", "--value", "from-the-vault")
    ns.lanyard(
        "role", "assignment", "create", "--assignee", upn, "--role", "Key Vault Secrets User", "--scope", vault["id"]
    )

    ns.az("cloud", "register", "-n", "Lanyard", "--endpoint-resource-manager", ns.endpoints["arm"])
    ns.az("cloud", "set", "-n", "Lanyard")
    wrong = ns.az("login", "-u", upn, "-p", "Wrong-Pa55word", check=False)
    assert wrong.returncode != 0 and "AADSTS50126" in wrong.stderr and "Wrong-Pa55word" not in wrong.stderr
    login = json.loads(ns.az("login", "-u", upn, "-p", PASSWORD, "-o", "json").stdout)
    assert login[0]["user"] == {"name": upn, "type": "user"}
    assert login[0]["tenantId"] == ns.endpoints["tenant_id"]

    token = json.loads(ns.az("account", "get-access-token", "-o", "json").stdout)
    claims = claims_of(token["accessToken"])
    assert claims["oid"] == user["id"] and claims["upn"] == upn and claims["idtyp"] == "user"
    assert claims["appid"] == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    # Graph as the person: /me, and reading another object (Entra's default member permissions).
    me = json.loads(ns.az("ad", "signed-in-user", "show", "-o", "json").stdout)
    assert me["id"] == user["id"] and me["userPrincipalName"] == upn
    admin_sp = json.loads(ns.az("ad", "sp", "show", "--id", ns.endpoints["admin"]["client_id"], "-o", "json").stdout)
    assert admin_sp["appId"] == ns.endpoints["admin"]["client_id"]

    vault_url = str(vault["properties"]["vaultUri"]).rstrip("/")
    read = ns.run(sys.executable, "-c", SECRET_READER, vault_url)
    assert read.stdout.strip() == "from-the-vault", read.stderr[-2000:]
    # The user's grant decides: without it, the same credential is refused by the vault.
    ns.lanyard(
        "role", "assignment", "delete", "--assignee", upn, "--role", "Key Vault Secrets User", "--scope", vault["id"]
    )
    refused = ns.run(sys.executable, "-c", SECRET_READER, vault_url, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr


DEVICE_PAGE = """
import re, ssl, sys, httpx
authority, code, user, password = sys.argv[1:5]
with httpx.Client(verify=ssl.create_default_context(cafile=sys.argv[5]), timeout=30) as http:
    page = http.get(f"{authority}/devicelogin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    done = http.post(f"{authority}/devicelogin",
                     data={"csrf_token": csrf, "otc": code, "username": user, "password": password})
    print(done.status_code, 'id="done"' in done.text)
"""


def test_az_login_with_a_device_code(on_443: Namespaced) -> None:
    ns = on_443
    upn = f"dc-{uuid.uuid4().hex[:6]}@az.example"
    user = ns.lanyard(
        "ad", "user", "create", "--display-name", "Dee Code", "--user-principal-name", upn, "--password", PASSWORD
    )
    ns.lanyard(
        "role",
        "assignment",
        "create",
        "--assignee",
        upn,
        "--role",
        "Reader",
        "--scope",
        f"/subscriptions/{ns.endpoints['subscription_id']}",
    )
    ns.az("cloud", "register", "-n", "LanyardDevice", "--endpoint-resource-manager", ns.endpoints["arm"])
    ns.az("cloud", "set", "-n", "LanyardDevice")
    ns.az("logout", check=False)
    login = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, str(AZ), "login", "--use-device-code", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ns.env(),
    )
    try:
        assert login.stderr is not None
        message = ""
        deadline = time.monotonic() + 120
        while "enter the code" not in message and time.monotonic() < deadline:
            line = login.stderr.readline()
            if not line:
                break
            message += line
        found = re.search(r"open the page (\S+) and enter the code (\w+)", message)
        assert found is not None, message
        assert found.group(1) == f"{ns.endpoints['authority']}/devicelogin"
        page = ns.run(
            sys.executable,
            "-c",
            DEVICE_PAGE,
            ns.endpoints["authority"],
            found.group(2),
            upn,
            PASSWORD,
            ns.endpoints["ca_cert"],
        )
        assert page.stdout.split() == ["200", "True"], page.stderr
        out, err = login.communicate(timeout=120)
        assert login.returncode == 0, err
        assert json.loads(out)[0]["user"] == {"name": upn, "type": "user"}
    finally:
        if login.poll() is None:
            login.kill()
            login.wait()
    token = json.loads(ns.az("account", "get-access-token", "-o", "json").stdout)
    assert claims_of(token["accessToken"])["oid"] == user["id"]


def test_az_ad_user_and_group_commands(on_443: Namespaced) -> None:
    """The real `az ad user|group` against Graph, signed in as the admin application."""
    ns = on_443
    admin = ns.endpoints["admin"]
    ns.az("cloud", "register", "-n", "LanyardAdmin", "--endpoint-resource-manager", ns.endpoints["arm"])
    ns.az("cloud", "set", "-n", "LanyardAdmin")
    ns.az(
        "login",
        "--service-principal",
        "-u",
        admin["client_id"],
        f"--password={admin['client_secret']}",
        "--tenant",
        ns.endpoints["tenant_id"],
    )
    upn = f"azad-{uuid.uuid4().hex[:6]}@az.example"

    def az_json(*args: str) -> Any:
        return json.loads(ns.az(*args, "-o", "json").stdout or "null")

    user = az_json(
        "ad", "user", "create", "--display-name", "Az Ad", "--password", PASSWORD, "--user-principal-name", upn
    )
    assert user["userPrincipalName"] == upn and user["id"]
    assert az_json("ad", "user", "show", "--id", upn)["id"] == user["id"]
    assert [u["id"] for u in az_json("ad", "user", "list", "--upn", upn)] == [user["id"]]
    assert user["id"] in [u["id"] for u in az_json("ad", "user", "list", "--display-name", "Az Ad")]
    name = f"azgroup-{uuid.uuid4().hex[:6]}"
    group = az_json("ad", "group", "create", "--display-name", name, "--mail-nickname", name)
    assert az_json("ad", "group", "show", "--group", name)["id"] == group["id"]
    ns.az("ad", "group", "member", "add", "--group", name, "--member-id", user["id"])
    assert az_json("ad", "group", "member", "check", "--group", name, "--member-id", user["id"]) == {"value": True}
    assert [m["id"] for m in az_json("ad", "group", "member", "list", "--group", name)] == [user["id"]]
    assignment = az_json(
        "role",
        "assignment",
        "create",
        "--assignee",
        upn,
        "--role",
        "Reader",
        "--scope",
        f"/subscriptions/{ns.endpoints['subscription_id']}",
    )
    assert assignment["principalId"] == user["id"] and assignment["principalType"] == "User"
    ns.az("ad", "group", "member", "remove", "--group", name, "--member-id", user["id"])
    assert az_json("ad", "group", "member", "check", "--group", name, "--member-id", user["id"]) == {"value": False}
    ns.az("ad", "group", "delete", "--group", name)
    ns.az("ad", "user", "delete", "--id", upn)
    gone = ns.az("ad", "user", "show", "--id", upn, check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr


MSAL_PASSWORD = """
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # ROPC is deprecated, still shipped
import msal
from azure.identity import UsernamePasswordCredential
authority, tenant, user, password = sys.argv[1:5]
app = msal.PublicClientApplication(
    "04b07795-8ddb-461a-bbee-02f9e1bf7b46", authority=f"{authority}/{tenant}", instance_discovery=False
)
result = app.acquire_token_by_username_password(user, password, scopes=["https://management.azure.com/.default"])
credential = UsernamePasswordCredential(
    "04b07795-8ddb-461a-bbee-02f9e1bf7b46", user, password, tenant_id=tenant, authority=authority,
    disable_instance_discovery=True,
)
token = credential.get_token("https://management.azure.com/.default").token
print(json.dumps({"msal": result.get("access_token"), "error": result.get("error_codes"), "identity": token}))
"""


def test_msal_and_azure_identity_password_flow_unaided_on_port_443(on_443: Namespaced) -> None:
    """On 443, msal's user-realm request reaches the platform itself: nothing pre-seeded."""
    ns = on_443
    upn = f"ropc-{uuid.uuid4().hex[:6]}@az.example"
    user = ns.lanyard(
        "ad", "user", "create", "--display-name", "Ro Pc", "--user-principal-name", upn, "--password", PASSWORD
    )
    out = ns.run(
        sys.executable, "-c", MSAL_PASSWORD, ns.endpoints["authority"], ns.endpoints["tenant_id"], upn, PASSWORD
    )
    tokens = json.loads(out.stdout)
    assert tokens["error"] is None
    for token in (tokens["msal"], tokens["identity"]):
        claims = claims_of(token)
        assert claims["oid"] == user["id"] and claims["upn"] == upn and claims["scp"] == "user_impersonation"
    access = (ns.home / "logs" / "access.log").read_text()
    assert "/common/userrealm/" in access


def test_az_login_refuses_a_user_who_must_change_their_password(on_443: Namespaced) -> None:
    """forceChangePasswordNextSignIn: `az login -u -p` gets Entra's AADSTS50055 and no account."""
    ns = on_443
    upn = f"fc-{uuid.uuid4().hex[:6]}@az.example"
    ns.lanyard(
        "ad", "user", "create", "--display-name", "Fo Rced", "--user-principal-name", upn, "--password", PASSWORD,
        "--force-change-password-next-sign-in",
    )
    ns.az("cloud", "register", "-n", "LanyardForced", "--endpoint-resource-manager", ns.endpoints["arm"])
    ns.az("cloud", "set", "-n", "LanyardForced")
    ns.az("logout", check=False)
    refused = ns.az("login", "-u", upn, "-p", PASSWORD, check=False)
    assert refused.returncode != 0 and "AADSTS50055" in refused.stderr and "password is expired" in refused.stderr
    assert PASSWORD not in refused.stderr
    accounts = ns.az("account", "list", "-o", "json", check=False)
    assert upn not in accounts.stdout
