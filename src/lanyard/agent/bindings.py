"""What this host may act on: workloads placed here and their identities, as the platform last said.

Replaced as a whole on every change, so a request sees either the old state or the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lanyard.client.assertion import CertificateKey
from lanyard.protocol.msi import MsiError, SelectorKind


@dataclass(frozen=True)
class Identity:
    kind: str  # "system" | "user"
    object_id: str
    client_id: str
    resource_id: str
    key: CertificateKey


@dataclass(frozen=True)
class Workload:
    resource_id: str
    type: str
    kind: str | None
    name: str
    identities: tuple[Identity, ...]
    # "strict": only a process of the running workload gets tokens; "header": whoever holds the secret.
    attestation: str = "strict"

    def select(self, selector: tuple[SelectorKind, str] | None) -> Identity:
        """The identity a request asks for; without a selector, the system-assigned one."""
        if selector is None:
            for identity in self.identities:
                if identity.kind == "system":
                    return identity
            raise MsiError(
                400,
                "Unable to load the proper Managed Identity: this workload has no system-assigned "
                "identity and the request named none.",
            )
        kind, value = selector
        wanted = value.lower()
        for identity in self.identities:
            field = {
                "client_id": identity.client_id,
                "object_id": identity.object_id,
                "resource_id": identity.resource_id,
            }[kind]
            if field.lower() == wanted:
                return identity
        raise MsiError(400, "Unable to load the proper Managed Identity.")


class BindingsState:
    def __init__(self) -> None:
        self.etag: str | None = None
        self.generation = -1
        self._workloads: dict[str, Workload] = {}
        self._keys: dict[tuple[str, str], CertificateKey] = {}

    def workload(self, resource_id: str) -> Workload | None:
        return self._workloads.get(resource_id.lower())

    def object_ids(self) -> set[str]:
        return {i.object_id for w in self._workloads.values() for i in w.identities}

    def apply(self, doc: dict[str, Any]) -> set[str]:
        """Swap in a new bindings document. Returns the object ids that are no longer bound."""
        before = self.object_ids()
        keys: dict[tuple[str, str], CertificateKey] = {}
        workloads: dict[str, Workload] = {}
        for w in doc.get("workloads", []):
            identities = []
            for i in w.get("identities", []):
                cache_key = (i["objectId"], i["certificate"])
                # Parse each key once, not on every bindings change.
                key = self._keys.get(cache_key) or CertificateKey.from_pem(i["certificate"], i["privateKey"])
                keys[cache_key] = key
                identities.append(Identity(i["kind"], i["objectId"], i["clientId"], i["resourceId"] or "", key))
            workloads[w["resourceId"].lower()] = Workload(
                w["resourceId"],
                w["type"],
                w.get("kind"),
                w["name"],
                tuple(identities),
                "header" if w.get("callerAttestation") == "header" else "strict",
            )
        self._workloads, self._keys = workloads, keys
        self.etag = doc.get("etag")
        self.generation = int(doc.get("generation", -1))
        return before - self.object_ids()
