"""Key Vault references in an app's settings, resolved when the workload starts (docs/keyvault-references.md).

Each `@Microsoft.KeyVault(...)` value is read through the vault's own API with a token of the app's
identity (system-assigned, or the user-assigned one its keyVaultReferenceIdentity names), as App
Service does; the process sees the secret's value. A reference that cannot be resolved stays literal,
and the run is told why (the control plane reports the same status at config/configreferences).
Nothing is cached between starts: a rotated secret reaches the next start. A value never leaves this
module except in the environment it returns, and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

import httpx

from lanyard.agent.bindings import Identity
from lanyard.agent.endpoints import TokenService
from lanyard.protocol import kvref
from lanyard.protocol.msi import MsiError, SelectorKind, TokenRequest

log = logging.getLogger("lanyard.agent.references")
CLOUD_METADATA = "/metadata/endpoints?api-version=2022-09-01"
VAULT_TIMEOUT = 10.0
MAX_VALUE = 25 * 1024  # Key Vault's own limit on a secret's value
# References of one start resolved at once: each costs a vault round trip, no more than this in flight.
CONCURRENCY = 8


@dataclass(frozen=True)
class Resolution:
    settings: dict[str, str]  # the values the process gets: resolved ones replaced, the rest as written
    notes: tuple[str, ...]  # one line per unresolved reference: the setting, its status and why


class ReferenceResolver:
    def __init__(self, service: TokenService, authority: str, ca_file: str) -> None:
        self.service = service
        self.authority = authority.rstrip("/")
        self._http = httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=ca_file), timeout=VAULT_TIMEOUT, follow_redirects=False
        )
        self._suffix: str | None = None
        self._lock = asyncio.Lock()

    async def vault_suffix(self) -> str:
        """The platform's vault DNS suffix, from its cloud metadata (what `az cloud register` reads): the
        only hosts the app's vault token is sent to."""
        async with self._lock:
            if self._suffix is None:
                response = await self._http.get(f"{self.authority}{CLOUD_METADATA}")
                response.raise_for_status()
                suffix = str(response.json()["suffixes"]["keyVaultDns"]).lstrip(".").lower()
                if not suffix:
                    raise ValueError("the platform names no vault suffix")
                self._suffix = suffix
            return self._suffix

    async def resolve(self, resource_id: str, settings: dict[str, str], identity_choice: str | None) -> Resolution:
        references = {name: value for name, value in settings.items() if kvref.is_reference(value)}
        if not references:
            return Resolution(dict(settings), ())
        try:
            suffix = await self.vault_suffix()
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            why = type(exc).__name__
            note = f"Key Vault references left as written: the platform's vault suffix is unknown ({why})"
            return Resolution(dict(settings), (note,))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str, text: str) -> tuple[str, str | None, kvref.Outcome]:
            async with gate:
                try:
                    value, outcome = await self._resolve_one(resource_id, text, suffix, identity_choice)
                except Exception as exc:  # a reference never stops the start; its text may not be logged
                    log.warning("%s: a Key Vault reference failed with %s", resource_id, type(exc).__name__)
                    return name, None, kvref.unexpected(type(exc).__name__)
            return name, value, outcome

        results = await asyncio.gather(*(one(n, v) for n, v in sorted(references.items())))
        out = dict(settings)
        notes = []
        for name, value, outcome in results:
            if value is not None:
                out[name] = value
            else:
                notes.append(
                    f"app setting {name}: Key Vault reference not resolved ({outcome.status}): {outcome.details}"
                )
        log.info("%s: %d of %d Key Vault references resolved", resource_id, len(results) - len(notes), len(results))
        return Resolution(out, tuple(notes))

    def _identity(self, resource_id: str, choice: str | None) -> Identity | None:
        workload = self.service.state.workload(resource_id)
        if workload is None:
            return None
        wanted = (choice or "SystemAssigned").strip()
        for identity in workload.identities:
            if wanted.lower() == "systemassigned" and identity.kind == "system":
                return identity
            if identity.kind == "user" and identity.resource_id.lower() == wanted.lower():
                return identity
        return None

    async def _resolve_one(
        self, resource_id: str, text: str, suffix: str, choice: str | None
    ) -> tuple[str | None, kvref.Outcome]:
        try:
            ref = kvref.parse(text, suffix)
        except kvref.ReferenceError as exc:
            return None, exc.outcome
        identity = self._identity(resource_id, choice)
        if identity is None:
            return None, kvref.failure(kvref.MSI_NOT_ENABLED, ref)
        selector: tuple[SelectorKind, str] | None = (
            None if identity.kind == "system" else ("resource_id", identity.resource_id)
        )
        try:
            token = await self.service.issue(resource_id, TokenRequest("2019-08-01", f"https://{suffix}", selector))
        except MsiError as exc:
            return None, kvref.failure(kvref.OTHER_REASONS, ref, f"no token for the identity ({exc.message[:200]})")
        try:
            response = await self._http.get(
                kvref.secret_url(ref, suffix), headers={"Authorization": f"Bearer {token.access_token}"}
            )
        except httpx.TimeoutException:
            return None, kvref.failure(kvref.FETCH_TIMED_OUT, ref)
        except httpx.HTTPError as exc:
            return None, kvref.failure(kvref.VAULT_NOT_FOUND, ref, f"it is unreachable ({type(exc).__name__})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("value"), str):
            value = body["value"]
            if len(value) > MAX_VALUE or "\x00" in value:
                return None, kvref.failure(kvref.OTHER_REASONS, ref, "the value cannot be an environment variable")
            return value, kvref.resolved()
        error = body.get("error") if isinstance(body, dict) else None
        code = ""
        if isinstance(error, dict):
            inner = error.get("innererror")
            code = str((inner.get("code") if isinstance(inner, dict) else None) or error.get("code") or "")
        return None, kvref.from_vault_answer(response.status_code, code, ref)

    async def aclose(self) -> None:
        await self._http.aclose()
