"""Server-side portal sessions: an opaque id in a cookie, everything else in the database.

Any node behind the balancer serves any session, and signing out on one ends it on all. The
database holds only the keyed hash of the cookie (a copy of the database cannot be replayed as a
browser); the refresh token and the pending sign-in's PKCE verifier are sealed by the barrier to
their row. The CSRF token is derived from the cookie with a key of its own, so it is never stored.

Access tokens stay in each node's memory (a bounded cache keyed by the session): a node without
one redeems the session's refresh token, and the directory's reuse grace lets two nodes do that at
the same moment without revoking the family.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from cachetools import LRUCache
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session as DbSession

from lanyard.core.clock import Clock
from lanyard.core.errors import CryptoError
from lanyard.crypto.barrier import Barrier
from lanyard.storage import models as m
from lanyard.storage.db import Store

COOKIE = "__Host-lanyard-portal"
IDLE_SECONDS = 30 * 60.0
ABSOLUTE_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000
# A sign-in that was started but not finished is forgotten after this long.
PENDING_SECONDS = 10 * 60.0
# last_seen_at is written back at most this often, not on every page.
TOUCH_EVERY = 30.0
_COOKIE_LENGTH = 43  # token_urlsafe(32)

Sealer = Callable[[bytes, str], bytes]  # (plaintext, context) -> sealed
Opener = Callable[[bytes, str], bytes]  # (sealed, context) -> plaintext; raises CryptoError


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    # Before sign-in completes: the PKCE verifier, state and nonce of the pending authorize request.
    pending: dict[str, str] = field(default_factory=dict)
    user: str = ""
    subscription: str = ""
    refresh_token: str = ""
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def __repr__(self) -> str:  # never let a token reach a log through repr()
        return f"Session(user={self.user!r})"


@dataclass(frozen=True)
class SessionKeys:
    """The keys sessions are kept under: the id's hash, the CSRF derivation and the seal."""

    id_key: bytes
    csrf_key: bytes
    seal: Sealer
    open: Opener

    @classmethod
    def of(cls, barrier: Barrier) -> SessionKeys:
        return cls(
            barrier.derive("portal-session-id"),
            barrier.derive("portal-csrf"),
            lambda data, context: barrier.seal(data, context=context),
            lambda blob, context: barrier.open(blob, context=context),
        )


class SessionStore:
    def __init__(
        self,
        clock: Clock,
        store: Store,
        keys: SessionKeys,
        idle: float = IDLE_SECONDS,
        absolute: float = ABSOLUTE_SECONDS,
    ) -> None:
        self.clock = clock
        self.store = store
        self.keys = keys
        self.idle = idle
        self.absolute = absolute
        # Per node: {id_hash: {scope: (token, expires)}}. Bounded; a dropped entry only costs a redeem.
        self._tokens: LRUCache[str, dict[str, tuple[str, float]]] = LRUCache(maxsize=MAX_SESSIONS)
        self._lock = threading.Lock()

    def _hash(self, session_id: str) -> str:
        return hmac.new(self.keys.id_key, session_id.encode(), hashlib.sha256).hexdigest()

    def _csrf(self, session_id: str) -> str:
        return hmac.new(self.keys.csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _context(id_hash: str) -> str:
        return f"portal_session:{id_hash}"

    def _sealed(self, session: Session, id_hash: str) -> bytes:
        secret = orjson.dumps({"pending": session.pending, "refresh_token": session.refresh_token})
        return self.keys.seal(secret, self._context(id_hash))

    def create(self) -> Session:
        now = self.clock.now()
        session_id = secrets.token_urlsafe(32)
        session = Session(session_id, self._csrf(session_id), now, now)
        id_hash = self._hash(session_id)
        with self.store.session() as s:
            self._sweep(s, now)
            if (s.scalar(select(func.count()).select_from(m.PortalSession)) or 0) >= MAX_SESSIONS:
                # Drop the least recently seen rather than grow without bound under a flood of visits.
                oldest = select(m.PortalSession.id_hash).order_by(m.PortalSession.last_seen_at).limit(1)
                s.execute(delete(m.PortalSession).where(m.PortalSession.id_hash.in_(oldest.scalar_subquery())))
            s.add(
                m.PortalSession(
                    id_hash=id_hash,
                    created_at=now,
                    last_seen_at=now,
                    user="",
                    subscription="",
                    sealed=self._sealed(session, id_hash),
                )
            )
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (touching it), or None if unknown or expired."""
        if not session_id or len(session_id) != _COOKIE_LENGTH:
            return None
        now = self.clock.now()
        id_hash = self._hash(session_id)
        with self.store.session() as s:
            row = s.get(m.PortalSession, id_hash)
            if row is None:
                return None
            if self._expired(row.created_at, row.last_seen_at, bool(row.user), now):
                s.delete(row)
                return None
            try:
                secret = orjson.loads(self.keys.open(row.sealed, self._context(id_hash)))
            except (CryptoError, orjson.JSONDecodeError):
                # Sealed under a key this node no longer has (or tampered with): the session is over.
                s.delete(row)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
            session = Session(
                session_id,
                self._csrf(session_id),
                row.created_at,
                now,
                pending=dict(secret.get("pending") or {}),
                user=row.user,
                subscription=row.subscription,
                refresh_token=str(secret.get("refresh_token") or ""),
            )
        with self._lock:
            session.access_tokens = self._tokens.setdefault(id_hash, {})
        return session

    def save(self, session: Session) -> None:
        """Write back what a page changed (sign-in, a rotated refresh token, the chosen subscription).
        A session that ended meanwhile (signed out on another node) stays ended."""
        id_hash = self._hash(session.id)
        with self.store.session() as s:
            s.execute(
                update(m.PortalSession)
                .where(m.PortalSession.id_hash == id_hash)
                .values(
                    user=session.user[:200],
                    subscription=session.subscription[:64],
                    sealed=self._sealed(session, id_hash),
                    last_seen_at=self.clock.now(),
                )
            )
        with self._lock:
            self._tokens[id_hash] = session.access_tokens

    def end(self, session_id: str | None) -> None:
        if not session_id:
            return
        id_hash = self._hash(session_id)
        with self.store.session() as s:
            s.execute(delete(m.PortalSession).where(m.PortalSession.id_hash == id_hash))
        with self._lock:
            self._tokens.pop(id_hash, None)

    def count(self) -> int:
        with self.store.session() as s:
            return int(s.scalar(select(func.count()).select_from(m.PortalSession)) or 0)

    def _expired(self, created: float, seen: float, signed_in: bool, now: float) -> bool:
        if not signed_in and now - created > PENDING_SECONDS:
            return True
        return now - seen > self.idle or now - created > self.absolute

    def _sweep(self, s: DbSession, now: float) -> None:
        table = m.PortalSession
        s.execute(
            delete(table).where(
                (table.last_seen_at < now - self.idle)
                | (table.created_at < now - self.absolute)
                | ((table.user == "") & (table.created_at < now - PENDING_SECONDS))
            )
        )
