"""Checks every local token request passes before any identity logic (docs/security.md T1, D2-D5).

Pure functions over the ASGI scope, in the shape of Starlette's TrustedHostMiddleware: they run
first and answer 400 themselves. Forwarding headers mean a proxy (an SSRF path) is in between;
browser headers mean a web page is; an unexpected Host means DNS rebinding.
"""

from __future__ import annotations

from collections.abc import Iterable

FORWARDING = (b"x-forwarded-for", b"forwarded", b"x-forwarded-host", b"x-real-ip")
BROWSER = (b"origin", b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest")


def headers_of(scope_headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Lower-cased names; a repeated header keeps its first value (we refuse on presence anyway)."""
    out: dict[bytes, bytes] = {}
    for name, value in scope_headers:
        out.setdefault(name.lower(), value)
    return out


def refusal(headers: dict[bytes, bytes], allowed_hosts: frozenset[bytes]) -> str | None:
    """A reason to refuse this request, or None."""
    for name in FORWARDING:
        if name in headers:
            return "Requests forwarded by a proxy are not accepted (X-Forwarded-For or similar present)."
    for name in BROWSER:
        if name in headers:
            return "Requests from a browser context are not accepted."
    host = headers.get(b"host", b"").lower()
    if host not in allowed_hosts:
        return "The Host header does not name this endpoint."
    return None


def allowed_hosts_for(port: int, extra: Iterable[str] = ()) -> frozenset[bytes]:
    names = ["127.0.0.1", "localhost", "[::1]", *extra]
    return frozenset({n.encode() for n in names} | {f"{n}:{port}".encode() for n in names})
