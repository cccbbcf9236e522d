"""A sample app: no secret in its code or its config. On Azure, or under Lanyard, it gets a token
with its managed identity and reads its database password from Key Vault."""

from __future__ import annotations

import base64
import json
import sys

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient


def read_secret(vault_url: str, name: str) -> str:
    with DefaultAzureCredential() as credential:
        client = SecretClient(vault_url, credential)
        value = client.get_secret(name).value
    return value or ""


def whoami() -> dict[str, str]:
    """The claims that say who the app is: the object id of its identity, and its resource id."""
    with DefaultAzureCredential() as credential:
        token = credential.get_token("https://management.azure.com/.default").token
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {"oid": claims["oid"], "xms_mirid": claims.get("xms_mirid", "")}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python app.py VAULT_URL SECRET_NAME", file=sys.stderr)
        return 2
    value = read_secret(argv[0], argv[1])
    print(f"read secret {argv[1]!r} ({len(value)} characters)")  # never the value itself
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
