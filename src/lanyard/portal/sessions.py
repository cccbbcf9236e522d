"""Server-side portal sessions: an opaque id in a cookie, everything else here.

In memory per node (a first slice): several nodes behind a balancer need sticky sessions.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from lanyard.core.clock import Clock

COOKIE = "__Host-lanyard-portal"
IDLE_SECONDS = 30 * 60.0
ABSOLUTE_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


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


class SessionStore:
    def __init__(self, clock: Clock, idle: float = IDLE_SECONDS, absolute: float = ABSOLUTE_SECONDS) -> None:
        self.clock = clock
        self.idle = idle
        self.absolute = absolute
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        now = self.clock.now()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sweep(now)
            if len(self._sessions) >= MAX_SESSIONS:
                # Drop the oldest rather than grow without bound under a flood of anonymous visits.
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (touching it), or None if unknown or expired."""
        if not session_id:
            return None
        now = self.clock.now()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen > self.idle or now - session.created > self.absolute

    def _sweep(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
