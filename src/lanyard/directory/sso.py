"""Single sign-on at the authorization endpoint: after a password sign-in on the login page the
browser holds a session cookie, and later authorize requests (from any client) skip the password.

The cookie holds a random id; the database keeps only its keyed hash (the barrier's HMAC), so a
copy of the database cannot be replayed as a browser. A session ends at its idle or absolute
expiry, at sign-out, and whenever the user's tokens are cut off (password change, account
disabled: both move the user's tokens_valid_from past the session's start).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from lanyard.core.clock import Clock
from lanyard.storage import people_repo as people
from lanyard.storage.db import Store

SSO_COOKIE = "__Host-lanyard-sso"
# Entra's defaults for a session that is not "kept signed in": a day of inactivity ends it; none
# outlives a week however busy it is.
SSO_IDLE = 24 * 3600.0
SSO_LIFETIME = 7 * 86400.0
# A session is written back at most this often (last_seen_at), not on every authorize request.
_TOUCH_EVERY = 300.0
_COOKIE_VALUE = 43  # token_urlsafe(32)


class SsoSessions:
    def __init__(self, store: Store, clock: Clock, secret_hash: Callable[[str], str]) -> None:
        self.store = store
        self.clock = clock
        self.hash = secret_hash

    def start(self, user: people.UserRecord) -> str:
        cookie = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.store.session() as s:
            record = people.SsoSessionRecord(
                self.hash(cookie), user.object_id, user.tenant_id, now, now, now + SSO_LIFETIME
            )
            people.add_sso_session(s, record)
        return cookie

    def user_of(self, cookie: str) -> people.UserRecord | None:
        """The user a session cookie stands for, while the session and the user are both good."""
        if len(cookie) != _COOKIE_VALUE:
            return None
        now = self.clock.now()
        id_hash = self.hash(cookie)
        with self.store.session() as s:
            session = people.get_sso_session(s, id_hash)
            if session is None:
                return None
            if session.expires_at <= now or session.last_seen_at + SSO_IDLE <= now:
                people.end_sso_session(s, id_hash)
                return None
            user = people.get_user(s, object_id=session.user_id)
            if (
                user is None
                or not user.account_enabled
                or user.force_change_password
                or session.created_at < user.tokens_valid_from
            ):
                people.end_sso_session(s, id_hash)
                return None
            if now - session.last_seen_at >= _TOUCH_EVERY:
                people.touch_sso_session(s, id_hash, now)
        return user

    def end(self, cookie: str) -> bool:
        if len(cookie) != _COOKIE_VALUE:
            return False
        with self.store.session() as s:
            return people.end_sso_session(s, self.hash(cookie))

    def forget_expired(self) -> bool:
        now = self.clock.now()
        with self.store.session() as s:
            people.delete_expired_sso_sessions(s, now - SSO_IDLE, now)
        return False
