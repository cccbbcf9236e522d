"""Federated identity credentials as rules (docs/federation.md): what a credential may say, and
whether an outside token's claims satisfy it. Pure: strings and dicts in, a verdict out.

A credential names an issuer, audiences, and one of a ``subject`` (exact, or a pattern with ``*``:
protocol/subject_patterns.py) or a ``claimsMatchingExpression`` (protocol/claims_expression.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lanyard.protocol.claims_expression import Node, parse_expression
from lanyard.protocol.subject_patterns import MAX_SUBJECT, RuleError, check_pattern, is_pattern, matches

__all__ = ["DEFAULT_AUDIENCE", "NAME", "Rule", "RuleError", "Spec", "check_spec", "compile_rule", "matches"]

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
MAX_ISSUER = 600
MAX_AUDIENCE = 600
MAX_AUDIENCES = 10
MAX_DESCRIPTION = 600
LANGUAGE_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")


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
