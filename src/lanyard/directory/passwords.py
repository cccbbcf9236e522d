"""User passwords: argon2id (memory-hard), the hash only ever stored, the password never kept.

An unknown user is checked against a fixed dummy hash, so the time an answer takes says nothing
about whether the name exists.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lanyard.core.errors import GraphError

# RFC 9106's second recommended option (64 MiB, 3 passes), one lane per core we expect to have.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=2)
_DUMMY = _HASHER.hash("lanyard: a password nobody has")
MIN_LENGTH = 8
MAX_LENGTH = 256


def check_policy(password: object) -> str:
    """Entra's complexity rule: 8 to 256 characters, three of lower, upper, digit, symbol."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise GraphError(
            "The specified password does not comply with password complexity requirements. "
            f"Please provide a different password ({MIN_LENGTH} to {MAX_LENGTH} characters).",
            code="Request_BadRequest",
        )
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < 3:
        raise GraphError(
            "The specified password does not comply with password complexity requirements. Please provide a "
            "different password (three of: lower case, upper case, digits, symbols).",
            code="Request_BadRequest",
        )
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, offered: str) -> bool:
    """True when `offered` matches; with `stored` None (no such user) the same work is done."""
    try:
        _HASHER.verify(stored or _DUMMY, offered)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None
