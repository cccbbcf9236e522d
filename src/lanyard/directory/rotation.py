"""The signing-key lifecycle, kept in the database and advanced by whichever node gets there first.

    pending  published in the JWKS, not signing: verifiers learn it before any token carries it
    active   signing (exactly one)
    retired  no longer signing, still published until every token it signed has expired
    removed  gone (the row and its sealed private key are deleted)
    revoked  an emergency: unpublished at once, so every verifier rejects its tokens on the next
             request; the row stays (without its private key) as a record until it would have aged out

Every transition is a transaction that first takes the key-lifecycle lock, then reads the keys and
changes them only if the transition is still due, so nodes racing each other (or a node restarted in
the middle) do it once. Signing follows the stored state, never the local clock: a clock that jumps
backwards can delay a pending key, never make it sign early. Every node learns of a transition
through the change feed and rebuilds its key ring and JWKS bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lanyard.audit.record import Event
from lanyard.audit.writer import NULL_AUDITOR, Auditor
from lanyard.core.clock import Clock
from lanyard.core.errors import ArmError, ConfigError
from lanyard.crypto.barrier import Barrier
from lanyard.directory.keys import SigningKeys, new_signing_key
from lanyard.observe import metrics
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store

log = logging.getLogger("lanyard.keys")
DAY = 86400.0
# A real deployment's defaults: a key signs for 30 days; its successor is published 2 days before it
# signs, which covers the 24 h that azure-identity, msal and most JWKS caches keep a key set.
DEFAULT_PERIOD = 30 * DAY
DEFAULT_PUBLISH_LEAD = 2 * DAY
# After retiring, a key stays published for the longest token lifetime plus the verifiers' leeway.
VERIFIER_LEEWAY = 300.0


@dataclass(frozen=True)
class RotationPolicy:
    period: float  # how long a key signs
    publish_lead: float  # how long before signing a key is published
    retain: float  # how long a retired key stays published

    @classmethod
    def for_tokens(cls, period: float, publish_lead: float, token_lifetime: float) -> RotationPolicy:
        if publish_lead <= 0:
            raise ConfigError("the signing-key publish lead must be positive")
        if period <= publish_lead:
            raise ConfigError(
                f"the signing-key rotation period ({period:.0f} s) must be longer than its publish lead "
                f"({publish_lead:.0f} s): verifiers must see a key before it signs"
            )
        return cls(period, publish_lead, token_lifetime + VERIFIER_LEEWAY)


class KeyLifecycle:
    def __init__(self, store: Store, barrier: Barrier, keys: SigningKeys, clock: Clock, policy: RotationPolicy) -> None:
        self.store = store
        self.barrier = barrier
        self.keys = keys
        self.clock = clock
        self.policy = policy
        self.audit: Auditor = NULL_AUDITOR

    # -- what is due --------------------------------------------------------------------------

    def due(self, records: list[repo.SigningKeyRecord], now: float) -> bool:
        """Whether any transition is due, judged from a node's current ring (no database access)."""
        active = [r for r in records if r.state == "active"]
        pending = [r for r in records if r.state == "pending"]
        if (
            active
            and not pending
            and now >= (active[0].activated_at or 0) + self.policy.period - self.policy.publish_lead
        ):
            return True
        if any(r.activates_at is not None and now >= r.activates_at for r in pending):
            return True
        return any(
            r.removes_at is not None and now >= r.removes_at for r in records if r.state in ("retired", "revoked")
        )

    def step(self) -> bool:
        """One tick of the job (core/jobs.py): advance if the ring says something is due."""
        if self.due(self.keys.ring.records, self.clock.now()):
            self.advance()
        return False

    def advance(self) -> list[str]:
        """Perform every transition that is due. Returns what was done (for logs and tests)."""
        now = self.clock.now()
        fresh = None
        records = self.keys.ring.records
        if not any(r.state == "pending" for r in records):
            fresh = new_signing_key(self.barrier, now, state="pending")  # outside the lock: slow
        done: list[str] = []
        with self.store.session() as s:
            repo.lock_signing_keys(s)
            records = repo.list_signing_keys(s)
            active = next((r for r in records if r.state == "active"), None)
            pending = next((r for r in records if r.state == "pending"), None)
            if active is None:
                return done
            if pending is not None and pending.activates_at is not None and now >= pending.activates_at:
                self._activate(s, pending, active, now)
                metrics.KEY_ROTATIONS.labels("scheduled").inc()
                done.append(f"activated {pending.kid}, retired {active.kid}")
                pending = None
                active = None
            signed_since = (active.activated_at or 0) if active is not None else now
            if (
                pending is None
                and fresh is not None
                and now >= signed_since + self.policy.period - self.policy.publish_lead
            ):
                # Never sooner than a full publish lead from now, however late we are.
                activates = max(signed_since + self.policy.period, now + self.policy.publish_lead)
                fresh = _with(fresh, activates_at=activates, created_at=now)
                repo.add_signing_key(s, fresh)
                done.append(f"published {fresh.kid}, signing from {activates:.0f}")
            for r in records:
                if r.state in ("retired", "revoked") and r.removes_at is not None and now >= r.removes_at:
                    repo.delete_signing_key(s, r.kid)
                    done.append(f"removed {r.kid}")
        for line in done:
            log.warning("signing keys: %s", line)
        if done:
            # Already committed: recorded when the trail accepts it (retried), never lost silently.
            self.audit.eventually(Event("credential.signing_key.schedule", detail={"transitions": done}))
        return done

    def _activate(self, s: repo.Session, new: repo.SigningKeyRecord, old: repo.SigningKeyRecord, now: float) -> None:
        repo.update_signing_key(
            s, old.kid, state="retired", retired_at=now, removes_at=now + self.policy.retain, activates_at=None
        )
        repo.update_signing_key(s, new.kid, state="active", activated_at=now, activates_at=None)

    # -- operator actions -----------------------------------------------------------------------

    def rotate(self, *, immediate: bool) -> repo.SigningKeyRecord:
        record = self._rotate(immediate=immediate)
        self.audit.record_sync(
            Event("credential.signing_key.rotate", resource=record.kid, detail={"immediate": immediate})
        )
        return record

    def revoke(self, kid: str) -> repo.SigningKeyRecord:
        record = self._revoke(kid)
        self.audit.record_sync(Event("credential.signing_key.revoke", resource=record.kid))
        return record

    def _rotate(self, *, immediate: bool) -> repo.SigningKeyRecord:
        """Schedule the next key now (published, signing after the publish lead), or, with
        `immediate`, make a new key sign at once (verifiers with a cached key set refetch it on the
        unknown kid). The old key is retired, not revoked: its tokens stay valid."""
        now = self.clock.now()
        fresh = new_signing_key(self.barrier, now, state="pending", activates_at=now + self.policy.publish_lead)
        with self.store.session() as s:
            repo.lock_signing_keys(s)
            records = repo.list_signing_keys(s)
            active = next(r for r in records if r.state == "active")
            pending = next((r for r in records if r.state == "pending"), None)
            if immediate:
                if pending is None:
                    repo.add_signing_key(s, fresh)
                    pending = fresh
                self._activate(s, pending, active, now)
                metrics.KEY_ROTATIONS.labels("immediate").inc()
                return _with(pending, state="active", activated_at=now, activates_at=None)
            if pending is not None:
                raise ArmError(
                    f"A rotation is already scheduled: key {pending.kid} signs from "
                    f"{pending.activates_at or now:.0f}. Use --immediate to make it sign now.",
                    code="RotationAlreadyScheduled",
                    status=409,
                )
            repo.add_signing_key(s, fresh)
            return fresh

    def _revoke(self, kid: str) -> repo.SigningKeyRecord:
        now = self.clock.now()
        with self.store.session() as s:
            repo.lock_signing_keys(s)
            found = next((r for r in repo.list_signing_keys(s) if r.kid == kid), None)
            if found is None or found.state in ("removed", "revoked"):
                raise ArmError(
                    f"There is no published signing key '{kid[:64]}'.", code="SigningKeyNotFound", status=404
                )
            if found.state == "active":
                raise ArmError(
                    f"Key {kid} is the active signing key and cannot be revoked while it signs: run "
                    "`lanyard keys rotate --immediate` first, then revoke it.",
                    code="CannotRevokeActiveKey",
                    status=409,
                )
            # The sealed private key is destroyed now; the row remains as the record of the revocation.
            repo.update_signing_key(
                s,
                kid,
                state="revoked",
                revoked_at=now,
                removes_at=now + self.policy.retain,
                activates_at=None,
                sealed_private_key=b"",
            )
            metrics.KEY_ROTATIONS.labels("revoked").inc()
            return _with(found, state="revoked", revoked_at=now, sealed_private_key=b"")


def describe(record: repo.SigningKeyRecord) -> dict[str, Any]:
    """A key as `lanyard keys list` shows it (no key material)."""
    return {
        "kid": record.kid,
        "state": record.state,
        "created": _iso(record.created_at),
        "activates": _iso(record.activates_at),
        "activated": _iso(record.activated_at),
        "retired": _iso(record.retired_at),
        "removes": _iso(record.removes_at),
        "revoked": _iso(record.revoked_at),
    }


def _iso(ts: float | None) -> str | None:
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with(record: repo.SigningKeyRecord, **changes: Any) -> repo.SigningKeyRecord:
    from dataclasses import replace

    return replace(record, **changes)
