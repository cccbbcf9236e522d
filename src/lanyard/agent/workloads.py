"""Running workloads and the secrets that identify them to the token endpoint.

Each start gets a fresh 256-bit IDENTITY_HEADER that lives exactly as long as the process: a header
copied out of a stopped process identifies nothing (docs/security.md D6). Lookup is by SHA-256 of the
header, so comparing a guess against every secret takes no secret-dependent time.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from lanyard.agent.attest import WorkloadScope


@dataclass
class RunningWorkload:
    resource_id: str
    kind: str  # the protocol: "appservice", "containerapps", "ml", "cloudshell", "servicefabric", "imds", "arc"
    header: str = field(repr=False)
    pid: int | None = None
    # Set once the process exists: what a caller must match (docs/security.md, caller attestation).
    scope: WorkloadScope | None = None


class WorkloadRegistry:
    def __init__(self) -> None:
        self._by_digest: dict[bytes, RunningWorkload] = {}

    @staticmethod
    def _digest(header: str) -> bytes:
        return hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()

    def start(self, resource_id: str, kind: str) -> RunningWorkload:
        workload = RunningWorkload(resource_id, kind, secrets.token_urlsafe(32))
        self._by_digest[self._digest(workload.header)] = workload
        return workload

    def stop(self, workload: RunningWorkload) -> None:
        self._by_digest.pop(self._digest(workload.header), None)

    def by_header(self, header: str) -> RunningWorkload | None:
        if not header or len(header) > 256:
            return None
        return self._by_digest.get(self._digest(header))

    def __len__(self) -> int:
        return len(self._by_digest)
