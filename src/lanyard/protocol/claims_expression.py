"""The claims-matching expression language of federated identity credentials, version 1
(docs/federation.md)::

    expr       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expr ")" | comparison
    comparison := claims['name'] ("eq" | "ne" | "matches") 'string'

``matches`` uses the subject pattern syntax (protocol/subject_patterns.py). A claim that is absent or
not a string is never ``eq`` nor ``matches`` anything (and is ``ne`` everything). Strings are
single-quoted, ``''`` is a quote. Nothing else exists: no functions, no arithmetic, nothing that loops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanyard.protocol.subject_patterns import MAX_SUBJECT, RuleError, check_pattern, matches

MAX_EXPRESSION = 2048
MAX_DEPTH = 16
_TOKEN = re.compile(
    r"\s*(?:(?P<claim>claims\[\s*'(?P<name>[A-Za-z0-9_.:/-]{1,128})'\s*\])"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<paren>[()])"
    r"|(?P<word>[A-Za-z]+))"
)
_OPERATORS = frozenset({"eq", "ne", "matches"})


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
