"""Federated identity credentials as rules (docs/federation.md): what a credential may say, and
whether an outside token's claims satisfy it. Pure: strings and dicts in, a verdict out.

A credential names an issuer, audiences, and one of:

- ``subject`` without ``*``: the token's ``sub`` must equal it exactly (case-sensitive, as Entra).
- ``subject`` with ``*``: a pattern. ``*`` matches any run of characters other than ``:``, ``**``
  any run at all; every other character matches itself. The pattern must start with a literal
  character, so no pattern trusts every subject of an issuer.
- ``claimsMatchingExpression`` (language version 1), a small expression over the claims::

      expr       := term ("or" term)*
      term       := factor ("and" factor)*
      factor     := "not" factor | "(" expr ")" | comparison
      comparison := claim ("eq" | "ne" | "matches") 'string'
      claim      := claims['name']

  ``matches`` uses the subject pattern syntax. A claim that is absent or not a string is never
  ``eq`` nor ``matches`` anything (and is ``ne`` everything). Strings are single-quoted, ``''`` is a
  quote. Nothing else exists: no functions, no arithmetic, nothing that loops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
MAX_ISSUER = 600
MAX_SUBJECT = 600
MAX_AUDIENCE = 600
MAX_AUDIENCES = 10
MAX_EXPRESSION = 2048
MAX_DEPTH = 16
MAX_DESCRIPTION = 600
LANGUAGE_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_TOKEN = re.compile(
    r"\s*(?:(?P<claim>claims\[\s*'(?P<name>[A-Za-z0-9_.:/-]{1,128})'\s*\])"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<paren>[()])"
    r"|(?P<word>[A-Za-z]+))"
)
_OPERATORS = frozenset({"eq", "ne", "matches"})


class RuleError(ValueError):
    """A credential that cannot be stored; the message says which field and why."""


# -- subject patterns ---------------------------------------------------------------------------


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


# -- claims-matching expressions ----------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    claim: str
    operator: str
    value: str

    def evaluate(self, claims: Mapping[str, Any]) -> bool:
        actual = claims.get(self.claim)
        if not isinstance(actual, str):
            return self.operator == "ne"
        if self.operator == "eq":
            return actual == self.value
        if self.operator == "ne":
            return actual != self.value
        return matches(self.value, actual)


@dataclass(frozen=True)
class Not:
    inner: Node

    def evaluate(self, claims: Mapping[str, Any]) -> bool:
        return not self.inner.evaluate(claims)


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]

    def evaluate(self, claims: Mapping[str, Any]) -> bool:
        return all(item.evaluate(claims) for item in self.items)


@dataclass(frozen=True)
class Any_:
    items: tuple[Node, ...]

    def evaluate(self, claims: Mapping[str, Any]) -> bool:
        return any(item.evaluate(claims) for item in self.items)


Node = Comparison | Not | All | Any_


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise RuleError(f"claimsMatchingExpression: unexpected text at character {position + 1}.")
        if match.group("claim"):
            out.append(("claim", match.group("name")))
        elif match.group("string") is not None:
            out.append(("string", match.group("string")[1:-1].replace("''", "'")))
        elif match.group("paren"):
            out.append(("paren", match.group("paren")))
        else:
            out.append(("word", match.group("word").lower()))
        position = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise RuleError("claimsMatchingExpression ends too early.")
        self.at += 1
        return token

    def expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise RuleError(f"claimsMatchingExpression nests deeper than {MAX_DEPTH}.")
        items = [self.term(depth)]
        while self.peek() == ("word", "or"):
            self.take()
            items.append(self.term(depth))
        return items[0] if len(items) == 1 else Any_(tuple(items))

    def term(self, depth: int) -> Node:
        items = [self.factor(depth)]
        while self.peek() == ("word", "and"):
            self.take()
            items.append(self.factor(depth))
        return items[0] if len(items) == 1 else All(tuple(items))

    def factor(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise RuleError(f"claimsMatchingExpression nests deeper than {MAX_DEPTH}.")
        token = self.take()
        if token == ("word", "not"):
            return Not(self.factor(depth + 1))
        if token == ("paren", "("):
            inner = self.expr(depth + 1)
            if self.take() != ("paren", ")"):
                raise RuleError("claimsMatchingExpression: a '(' is not closed.")
            return inner
        if token[0] != "claim":
            raise RuleError(f"claimsMatchingExpression: expected claims['name'], found '{token[1][:40]}'.")
        operator = self.take()
        if operator[0] != "word" or operator[1] not in _OPERATORS:
            raise RuleError(
                f"claimsMatchingExpression: expected eq, ne or matches after claims['{token[1]}'], "
                f"found '{operator[1][:40]}'."
            )
        value = self.take()
        if value[0] != "string":
            raise RuleError("claimsMatchingExpression: a comparison needs a quoted string on its right.")
        if operator[1] == "matches":
            check_pattern(value[1], f"the pattern for claims['{token[1]}']")
        elif len(value[1]) > MAX_SUBJECT:
            raise RuleError(f"claimsMatchingExpression: strings are at most {MAX_SUBJECT} characters.")
        return Comparison(token[1], operator[1], value[1])


def parse_expression(text: str) -> Node:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_EXPRESSION:
        raise RuleError(f"claimsMatchingExpression.value must be 1 to {MAX_EXPRESSION} characters.")
    parser = _Parser(_tokens(text))
    node = parser.expr(0)
    if parser.peek() is not None:
        raise RuleError(f"claimsMatchingExpression: unexpected '{parser.take()[1][:40]}' after the expression.")
    return node


# -- credentials as rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What the token endpoint checks a presented token against (storage's record, compiled)."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    subject: str | None
    expression: Node | None

    def subject_matches(self, claims: Mapping[str, Any]) -> bool:
        if self.expression is not None:
            return self.expression.evaluate(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or self.subject is None:
            return False
        return matches(self.subject, sub) if is_pattern(self.subject) else sub == self.subject


def check_issuer(issuer: object) -> str:
    if not isinstance(issuer, str) or not issuer or len(issuer) > MAX_ISSUER:
        raise RuleError(f"issuer must be a URL of 1 to {MAX_ISSUER} characters.")
    try:
        parts = urlsplit(issuer)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise RuleError(f"issuer '{issuer[:100]}' is not a valid URL.") from exc
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise RuleError(f"issuer '{issuer[:100]}' must be an https URL without query, fragment or user.")
    return issuer


def check_audiences(value: object) -> tuple[str, ...]:
    if value is None:
        return (DEFAULT_AUDIENCE,)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_AUDIENCES:
        raise RuleError(f"audiences must be an array of 1 to {MAX_AUDIENCES} strings.")
    out = []
    for audience in value:
        if not isinstance(audience, str) or not audience or len(audience) > MAX_AUDIENCE:
            raise RuleError(f"each audience must be a string of 1 to {MAX_AUDIENCE} characters.")
        out.append(audience)
    return tuple(out)


@dataclass(frozen=True)
class Spec:
    issuer: str
    subject: str | None
    expression: str | None
    language_version: int | None
    audiences: tuple[str, ...]
    description: str | None


def check_spec(
    issuer: object,
    subject: object,
    audiences: object,
    expression: object = None,
    language_version: object = None,
    description: object = None,
) -> Spec:
    """Everything a credential may be stored with, or a RuleError naming what is wrong."""
    issuer_value = check_issuer(issuer)
    audience_values = check_audiences(audiences)
    if subject is not None and subject != "" and expression is not None:
        raise RuleError("Give either subject or claimsMatchingExpression, not both.")
    subject_value: str | None = None
    expression_value: str | None = None
    version: int | None = None
    if expression is not None:
        if not isinstance(expression, str):
            raise RuleError("claimsMatchingExpression.value must be a string.")
        parse_expression(expression)
        if language_version is None:
            language_version = LANGUAGE_VERSION
        if isinstance(language_version, bool) or language_version != LANGUAGE_VERSION:
            raise RuleError(f"claimsMatchingExpression.languageVersion must be {LANGUAGE_VERSION}.")
        expression_value, version = expression, LANGUAGE_VERSION
    else:
        if not isinstance(subject, str) or not subject:
            raise RuleError("subject is required (or, with api-version 2023-07-31-preview, claimsMatchingExpression).")
        subject_value = check_pattern(subject) if is_pattern(subject) else subject
        if len(subject_value) > MAX_SUBJECT:
            raise RuleError(f"subject must be at most {MAX_SUBJECT} characters.")
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
        raise RuleError(f"description must be a string of at most {MAX_DESCRIPTION} characters.")
    return Spec(issuer_value, subject_value, expression_value, version, audience_values, description)


def compile_rule(
    name: str, issuer: str, audiences: tuple[str, ...], subject: str | None, expression: str | None
) -> Rule:
    return Rule(name, issuer, audiences, subject, parse_expression(expression) if expression else None)
