"""The demo app: no secret in its code or config. It asks the platform for a token with its managed
identity, then reads its database password from the vault, exactly as it would on Azure."""

from __future__ import annotations

import base64
import json
import os
import sys

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient


def main() -> int:
    credential = DefaultAzureCredential()
    token = credential.get_token("https://management.azure.com/.default").token
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    print(f"[app] running as {os.environ.get('WEBSITE_SITE_NAME')}; token for oid={claims['oid']}")
    print(f"[app]   xms_mirid={claims['xms_mirid']}")
    secret = SecretClient(sys.argv[1], credential).get_secret("db-password")
    print(f"[app] read secret 'db-password' from {sys.argv[1]}: {secret.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
