"""A workload for the tests: runs the actions given as JSON in argv[1] with the real client libraries,
then prints one JSON line with the results. It runs under `lanyard webapp run` / `vm run`, so it sees
exactly the environment the platform gives an app."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def azid_sync(action: dict[str, Any]) -> str:
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(**action.get("kwargs", {})).get_token(action["scope"]).token


def azid_loop(action: dict[str, Any]) -> dict[str, Any]:
    """One credential asking for a token for a new resource every `interval` s for `seconds` s, as an
    app does that reaches many resources: every request goes to the platform, none is a cache hit."""
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(**action.get("kwargs", {}))
    deadline = time.monotonic() + float(action["seconds"])
    done, failures = 0, []
    while time.monotonic() < deadline:
        try:
            credential.get_token(f"{action['resource']}{done + len(failures)}/.default")
            done += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:300])
        time.sleep(float(action.get("interval", 0.1)))
    return {"ok": done, "failures": failures}


def azid_async(action: dict[str, Any]) -> str:
    from azure.identity.aio import ManagedIdentityCredential

    async def go() -> str:
        async with ManagedIdentityCredential(**action.get("kwargs", {})) as credential:
            return (await credential.get_token(action["scope"])).token

    return asyncio.run(go())


def dac_sync(action: dict[str, Any]) -> str:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**action.get("kwargs", {})).get_token(action["scope"]).token


def dac_async(action: dict[str, Any]) -> str:
    from azure.identity.aio import DefaultAzureCredential

    async def go() -> str:
        async with DefaultAzureCredential(**action.get("kwargs", {})) as credential:
            return (await credential.get_token(action["scope"])).token

    return asyncio.run(go())


def wic_sync(action: dict[str, Any]) -> str:
    """AKS workload identity as the SDK does it: everything from the environment the platform gave."""
    from azure.identity import WorkloadIdentityCredential

    return WorkloadIdentityCredential().get_token(action["scope"]).token


def wic_async(action: dict[str, Any]) -> str:
    from azure.identity.aio import WorkloadIdentityCredential

    async def go() -> str:
        async with WorkloadIdentityCredential() as credential:
            return (await credential.get_token(action["scope"])).token

    return asyncio.run(go())


def wait_rewrite(action: dict[str, Any]) -> bool:
    """Whether the file an environment variable names is replaced (new contents) within `timeout` s."""
    path = os.environ[action["name"]]
    with open(path, "rb") as fh:
        first = fh.read()
    deadline = time.time() + float(action.get("timeout", 90))
    while time.time() < deadline:
        with open(path, "rb") as fh:
            if fh.read() != first:
                return True
        time.sleep(0.2)
    return False


def msal_mi(action: dict[str, Any]) -> str:
    import msal
    import requests

    client_id = action.get("client_id")
    # "identity": {"resource_id": …} or {"object_id": …} selects a user-assigned identity those ways.
    chosen = {"client_id": client_id} if client_id else action.get("identity")
    identity = msal.UserAssignedManagedIdentity(**chosen) if chosen else msal.SystemAssignedManagedIdentity()
    result = msal.ManagedIdentityClient(identity, http_client=requests.Session()).acquire_token_for_client(
        resource=action["resource"]
    )
    if "access_token" not in result:
        raise RuntimeError(f"{result.get('error')}: {result.get('error_description')}")
    return str(result["access_token"])


def kv_get(action: dict[str, Any]) -> str:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    global _kv_client
    if _kv_client is None:  # one client for the whole run: its token and challenge caches persist
        credential = ManagedIdentityCredential(**action["mi"]) if "mi" in action else DefaultAzureCredential()
        _kv_client = SecretClient(action["vault"], credential)
    return str(_kv_client.get_secret(action["name"]).value)


def kv_get_async(action: dict[str, Any]) -> str:
    from azure.identity.aio import DefaultAzureCredential
    from azure.keyvault.secrets.aio import SecretClient

    async def go() -> str:
        async with DefaultAzureCredential() as credential, SecretClient(action["vault"], credential) as client:
            return str((await client.get_secret(action["name"])).value)

    return asyncio.run(go())


_kv_client: Any = None


def raw(action: dict[str, Any]) -> dict[str, Any]:
    base = os.environ.get(action.get("base_env", "IDENTITY_ENDPOINT"), action.get("base", ""))
    url = base + action.get("path", "")
    for name, env_name in action.get("query_from_env", {}).items():
        url += f"&{name}={urllib.parse.quote(os.environ.get(env_name, ''))}"
    headers = dict(action.get("headers", {}))
    for name, env_name in action.get("headers_from_env", {}).items():
        headers[name] = os.environ.get(env_name, "")
    # A form body (Cloud Shell's POST): "data" is a dict of fields.
    data = urllib.parse.urlencode(action["data"]).encode() if "data" in action else None
    request = urllib.request.Request(url, data=data, headers=headers, method=action.get("method", "GET"))  # noqa: S310
    context = None
    if action.get("tls_unverified"):  # Service Fabric's self-signed endpoint: peer-thumbprint checks the pin
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310 - loopback
            status, body, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, got = error.code, error.read(), error.headers
    answer = {"status": status, "body": json.loads(body or b"null"), "ms": (time.perf_counter() - started) * 1000}
    if "want_headers" in action:  # the response headers named, None where absent
        answer["headers"] = {name: got.get(name) for name in action["want_headers"]}
    return answer


def peer_thumbprint(action: dict[str, Any]) -> str:
    """SHA-1 of the certificate the HTTPS endpoint in `url_env` presents, as Service Fabric clients pin it."""
    url = urllib.parse.urlparse(os.environ[action.get("url_env", "IDENTITY_ENDPOINT")])
    der = ssl.get_server_certificate((url.hostname or "", url.port or 443))
    return hashlib.sha1(ssl.PEM_cert_to_DER_cert(der), usedforsecurity=False).hexdigest().upper()


def raw_loop(action: dict[str, Any]) -> dict[str, Any]:
    """`count` requests, each on a new connection: the statuses seen, and whose tokens came back."""
    statuses: dict[str, int] = {}
    subjects: set[str] = set()
    bodies: dict[str, Any] = {}  # the first body seen with each status
    for _ in range(int(action["count"])):
        answer = raw(action)
        statuses[str(answer["status"])] = statuses.get(str(answer["status"]), 0) + 1
        bodies.setdefault(str(answer["status"]), answer["body"])
        token = (answer["body"] or {}).get("access_token") if isinstance(answer["body"], dict) else None
        if token:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            subjects.add(str(claims.get("oid")))
    return {"statuses": statuses, "subjects": sorted(subjects), "pid": os.getpid(), "bodies": bodies}


def write_env(action: dict[str, Any]) -> None:
    """Leak some of this process's environment into a file (what an attacker would copy)."""
    with open(action["path"], "w") as fh:
        json.dump({name: os.environ.get(name) for name in action["names"]} | {"pid": os.getpid()}, fh)


def connect_unix(action: dict[str, Any]) -> str:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(action["path"])
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


def ids(action: dict[str, Any]) -> dict[str, Any]:
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "home": os.environ.get("HOME")}


def env(action: dict[str, Any]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in action["names"]}


def file_digests(action: dict[str, Any]) -> dict[str, str | None]:
    """sha256 of each file an environment variable names (None: unreadable by this process)."""
    out: dict[str, str | None] = {}
    for name in action["names"]:
        try:
            with open(os.environ.get(name, ""), "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            out[name] = None
    return out


def read_paths(action: dict[str, Any]) -> dict[str, str]:
    """What reading each path gives this process: "ok" or the error's name."""
    out = {}
    for path in action["paths"]:
        try:
            with open(path, "rb") as fh:
                fh.read(1)
            out[path] = "ok"
        except OSError as exc:
            out[path] = type(exc).__name__
    return out


def wait_file(action: dict[str, Any]) -> bool:
    deadline = time.time() + action.get("timeout", 60)
    while time.time() < deadline:
        if os.path.exists(action["path"]):
            return True
        time.sleep(0.02)
    return False


def unset(action: dict[str, Any]) -> None:
    for name in action["names"]:
        os.environ.pop(name, None)


def set_env(action: dict[str, Any]) -> None:
    os.environ.update(action["values"])


ACTIONS = {
    "azid-sync": azid_sync,
    "azid-async": azid_async,
    "azid-loop": azid_loop,
    "dac-sync": dac_sync,
    "dac-async": dac_async,
    "msal": msal_mi,
    "wic-sync": wic_sync,
    "wic-async": wic_async,
    "wait-rewrite": wait_rewrite,
    "raw": raw,
    "peer-thumbprint": peer_thumbprint,
    "env": env,
    "wait-file": wait_file,
    "file-digests": file_digests,
    "raw-loop": raw_loop,
    "ids": ids,
    "write-env": write_env,
    "connect-unix": connect_unix,
    "read-paths": read_paths,
    "unset": unset,
    "set-env": set_env,
    "kv-get": kv_get,
    "kv-get-async": kv_get_async,
}


def main() -> int:
    results = []
    for action in json.loads(sys.argv[1]):
        try:
            results.append({"ok": True, "value": ACTIONS[action["kind"]](action)})
        except Exception as exc:  # report, don't crash: the test decides what a failure means
            results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        if action.get("mark"):
            with open(action["mark"], "w") as fh:
                fh.write("done")
    print("RESULTS " + json.dumps(results), flush=True)
    return int(os.environ.get("PROBE_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
