"""Managed-identity certificates that renew themselves.

Each identity's platform-held certificate is replaced once it is `renew_after` old (Azure's live 90
days and are renewed from about day 46). The new one reaches the agents that host the identity
through their bindings (the change feed wakes their long polls); the old one keeps working for
`grace` more seconds, for an agent that was away, and is then refused by the token endpoint.
A workload never sees the switch: its cached tokens stay valid, and the agent's next assertion is
signed with the new key.

Any node may run the job; each batch takes a lock, then re-reads what is due, so two nodes never
renew the same identity twice. Keys are generated before the lock is taken (RSA is slow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lanyard.audit.record import Event
from lanyard.audit.writer import NULL_AUDITOR, Auditor
from lanyard.core.clock import Clock
from lanyard.core.errors import ConfigError
from lanyard.directory.service import Directory
from lanyard.storage import directory_repo as repo
from lanyard.storage.locks import transaction_lock

log = logging.getLogger("lanyard.identities")
DAY = 86400.0
DEFAULT_RENEW_AFTER = 46 * DAY
DEFAULT_GRACE = 1 * DAY
BATCH = 50  # identities renewed per transaction: bounds lock time and key generation per tick
KEEP_ENDED = 7 * DAY  # ended credentials are kept this long as a record, then deleted


@dataclass(frozen=True)
class RenewalPolicy:
    lifetime: float
    renew_after: float
    grace: float

    @classmethod
    def checked(cls, lifetime: float, renew_after: float, grace: float) -> RenewalPolicy:
        if not 0 < renew_after < lifetime:
            raise ConfigError(
                f"identity certificates must be renewed ({renew_after:.0f} s) before they expire ({lifetime:.0f} s)"
            )
        if grace <= 0:
            raise ConfigError("the grace period of a renewed identity certificate must be positive")
        return cls(lifetime, renew_after, grace)


class IdentityRenewal:
    def __init__(
        self, directory: Directory, clock: Clock, policy: RenewalPolicy, audit: Auditor = NULL_AUDITOR
    ) -> None:
        self.directory = directory
        self.audit = audit
        self.store = directory.store
        self.clock = clock
        self.policy = policy

    def step(self) -> bool:
        """One tick of the job (core/jobs.py); True while a backlog remains."""
        return self.renew_due() >= BATCH

    def renew_due(self) -> int:
        """Renew up to one batch of identities that are due; returns how many were renewed."""
        now = self.clock.now()
        cutoff = now - self.policy.renew_after
        with self.store.session() as s:
            due = repo.identities_due_for_renewal(s, cutoff, BATCH)
        if not due:
            return 0
        fresh = {p.app_id: self.directory.make_identity_credential(p) for p in due}
        renewed: list[str] = []
        with self.store.session() as s:
            transaction_lock(s, "identity-renewal")
            still_due = {p.app_id for p in repo.identities_due_for_renewal(s, cutoff, BATCH)}
            for app_id, record in fresh.items():
                if app_id not in still_due:
                    continue  # another node renewed it while we generated keys
                repo.add_credential(s, record, now)
                repo.end_platform_credentials(s, app_id, keep=record.key_id, end_at=now + self.policy.grace)
                renewed.append(app_id)
            repo.delete_ended_platform_credentials(s, now - KEEP_ENDED)
        if renewed:
            n = len(renewed)
            log.warning("renewed the certificates of %d managed identit%s", n, "y" if n == 1 else "ies")
        for app_id in renewed:
            self.audit.eventually(
                Event("credential.identity.renew", app_id=app_id, detail={"key_id": fresh[app_id].key_id})
            )
        return len(renewed)
