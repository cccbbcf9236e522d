"""The Key Vault reference syntaxes App Service accepts, and what each malformed one is."""

from __future__ import annotations

import pytest

from lanyard.protocol import kvref

SUFFIX = "vault.lanyard.localhost:8443"
URI = f"https://kv-one.{SUFFIX}/secrets/db-password"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"@Microsoft.KeyVault(SecretUri={URI})", kvref.Reference("kv-one", "db-password", None)),
        (f"@Microsoft.KeyVault(SecretUri={URI}/)", kvref.Reference("kv-one", "db-password", None)),
        (f"@Microsoft.KeyVault(SecretUri={URI}/abc123)", kvref.Reference("kv-one", "db-password", "abc123")),
        (
            f"  @Microsoft.KeyVault(secreturi=https://KV-One.{SUFFIX.upper()}/secrets/db-password)  ",
            kvref.Reference("kv-one", "db-password", None),
        ),
        ("@Microsoft.KeyVault(VaultName=KV-one;SecretName=db)", kvref.Reference("kv-one", "db", None)),
        (
            "@Microsoft.KeyVault(VaultName=kv-one; SecretName=db; SecretVersion=v1;)",
            kvref.Reference("kv-one", "db", "v1"),
        ),
    ],
)
def test_both_syntaxes(text: str, expected: kvref.Reference) -> None:
    assert kvref.is_reference(text)
    assert kvref.parse(text, SUFFIX) == expected


@pytest.mark.parametrize(
    "body",
    [
        "VaultName=kv-one",  # no secret
        "SecretName=db",  # no vault
        "VaultName=kv-one;SecretName=db;Color=red",  # an unknown key
        "VaultName=kv-one;VaultName=kv-two;SecretName=db",  # a key twice
        "VaultName=;SecretName=db",  # an empty value
        "VaultName=k;SecretName=db",  # a vault name too short
        "VaultName=kv-one;SecretName=db_password",  # not a secret name
        "VaultName=kv-one;SecretName=db;SecretVersion=v/1",  # not a version
        f"SecretUri={URI};SecretName=db",  # SecretUri stands alone
        f"SecretUri=http://kv-one.{SUFFIX}/secrets/db",  # not https
        f"SecretUri=https://kv-one.{SUFFIX}/keys/db",  # not a secret
        f"SecretUri=https://kv-one.{SUFFIX}/secrets/db/v1/extra",
        f"SecretUri={URI}?api-version=7.4",  # a query
        f"SecretUri=https://kv_one.{SUFFIX}/secrets/db",  # not a vault name
        "SecretUri=https://[::1/secrets/db",  # not a URL
        "",
    ],
)
def test_malformed_is_invalid_syntax(body: str) -> None:
    with pytest.raises(kvref.ReferenceError) as caught:
        kvref.parse(f"@Microsoft.KeyVault({body})", SUFFIX)
    assert caught.value.outcome.status == kvref.INVALID_SYNTAX
    assert caught.value.outcome.details.startswith("Key Vault reference was not able to be resolved")


def test_unclosed_and_oversized_references_are_invalid() -> None:
    for text in ("@Microsoft.KeyVault(VaultName=kv-one;SecretName=db", "@Microsoft.KeyVault(" + "x" * 3000 + ")"):
        with pytest.raises(kvref.ReferenceError) as caught:
            kvref.parse(text, SUFFIX)
        assert caught.value.outcome.status == kvref.INVALID_SYNTAX


@pytest.mark.parametrize(
    "uri",
    [
        "https://kv-one.vault.azure.net/secrets/db",  # another cloud's vault
        "https://kv-one.vault.lanyard.localhost/secrets/db",  # this zone without the platform's port
        "https://kv-one.vault.lanyard.localhost:9999/secrets/db",
        "https://kv-one.evil.example/secrets/db",
    ],
)
def test_a_host_outside_the_platforms_vaults_is_vault_not_found(uri: str) -> None:
    with pytest.raises(kvref.ReferenceError) as caught:
        kvref.parse(f"@Microsoft.KeyVault(SecretUri={uri})", SUFFIX)
    assert caught.value.outcome.status == kvref.VAULT_NOT_FOUND
    assert caught.value.partial == kvref.Reference("kv-one", "db", None)


def test_plain_values_are_no_references() -> None:
    for value in ("", "secret", "@Microsoft.KeyVaul(x)", "Microsoft.KeyVault(VaultName=a;SecretName=b)"):
        assert not kvref.is_reference(value)


@pytest.mark.parametrize(
    ("status", "code", "version", "expected"),
    [
        (401, "Unauthorized", None, kvref.UNAUTHORIZED_CLIENT),
        (403, "AccessDenied", None, kvref.ACCESS_DENIED),
        (403, "ForbiddenByRbac", None, kvref.ACCESS_DENIED),
        (403, "SecretDisabled", None, kvref.OTHER_REASONS),
        (404, "VaultNotFound", None, kvref.VAULT_NOT_FOUND),
        (404, "SecretNotFound", None, kvref.SECRET_NOT_FOUND),
        (404, "SecretNotFound", "v1", kvref.SECRET_VERSION_NOT_FOUND),
        (500, "InternalError", None, kvref.OTHER_REASONS),
    ],
)
def test_vault_answers_map_to_statuses(status: int, code: str, version: str | None, expected: str) -> None:
    outcome = kvref.from_vault_answer(status, code, kvref.Reference("kv-one", "db", version))
    assert outcome.status == expected and not outcome.resolved
    assert "kv-one" in outcome.details or expected == kvref.OTHER_REASONS
