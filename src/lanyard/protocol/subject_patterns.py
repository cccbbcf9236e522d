"""Subject patterns of federated identity credentials (docs/federation.md): ``*`` matches any run of
characters other than ``:``, ``**`` any run at all, every other character itself. A pattern starts
with a literal character, so none trusts every subject of an issuer. Matching is linear in the value.
"""

from __future__ import annotations

import re

MAX_SUBJECT = 600
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


class RuleError(ValueError):
    """A credential that cannot be stored; the message says which field and why."""


def is_pattern(subject: str) -> bool:
    return "*" in subject


def check_pattern(pattern: str, what: str = "subject") -> str:
    if not pattern or len(pattern) > MAX_SUBJECT:
        raise RuleError(f"{what} must be 1 to {MAX_SUBJECT} characters.")
    if not _PRINTABLE.match(pattern):
        raise RuleError(f"{what} must be printable ASCII without spaces.")
    if "***" in pattern:
        raise RuleError(f"{what} pattern '{pattern[:100]}' has '***': use '*' (within a ':' segment) or '**' (any).")
    if pattern.startswith("*"):
        raise RuleError(
            f"{what} pattern '{pattern[:100]}' must start with a literal character: a leading wildcard would "
            "trust every subject of the issuer."
        )
    return pattern


def _compile_pattern(pattern: str) -> tuple[int, int, int, dict[str, int]]:
    """The pattern as a bit-parallel automaton: bit i is "the first i pieces matched". A regex would
    backtrack (a*a*a*b against aaaa… is polynomial in the star count); this is linear in the value."""
    pieces: list[str] = [piece for piece in re.split(r"(\*\*|\*)", pattern) for piece in _split_literal(piece)]
    star = dstar = 0
    literals: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        if piece == "**":
            dstar |= 1 << i
        elif piece == "*":
            star |= 1 << i
        else:
            literals[piece] = literals.get(piece, 0) | 1 << i
    return len(pieces), star, dstar, literals


def _split_literal(piece: str) -> list[str]:
    return [piece] if piece in ("*", "**") else list(piece)


def matches(pattern: str, value: str) -> bool:
    size, star, dstar, literals = _compile_pattern(pattern)
    stars = star | dstar

    def closed(states: int) -> int:
        while True:  # a wildcard may match nothing: being before it is being after it
            more = states | (states & stars) << 1
            if more == states:
                return states
            states = more

    states = closed(1)
    for ch in value:
        kept = states & dstar
        if ch != ":":
            kept |= states & star
        states = closed(((states & literals.get(ch, 0)) << 1) | kept)
        if not states:
            return False
    return bool(states >> size & 1)
