"""F19 for the portal: the response headers every page carries and the synchronizer-token check."""

from __future__ import annotations

import hmac

from lanyard.portal.sessions import Session

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class CsrfRejected(Exception):
    pass


def check_csrf(session: Session | None, offered: str) -> None:
    """The form's token must be the session's own: a cross-site form cannot know it."""
    if session is None or not offered or not hmac.compare_digest(session.csrf.encode(), offered.encode()):
        raise CsrfRejected()
