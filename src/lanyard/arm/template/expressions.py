"""The ARM template expression language: "[...]" strings parsed into a small tree and evaluated.

Pure: what an expression may ask of the world (parameters, resources, the scope) comes through the
`Scope` the caller passes in. Function and property names are case-insensitive, as in ARM.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class TemplateError(Exception):
    """A fault in the template, raised with the JSON path of the value that holds it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member:
    target: Node
    key: Node


Node = Literal | Call | Member

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<ident>[A-Za-z_][\w]*)|(?P<punct>[(),.\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise TemplateError(
                f"The template language expression '{text[:200]}' is not valid: unexpected character at position {pos}."
            )
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"The template language expression '{self.text[:200]}' is not valid: {why}.")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("the expression ends too early")
        if value is not None and token[1] != value:
            raise self.fail(f"expected '{value}' but found '{token[1][:40]}'")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expression()
        if self.peek() is not None:
            raise self.fail(f"unexpected '{self.peek()[1][:40]}' after the expression")  # type: ignore[index]
        return node

    def expression(self) -> Node:
        node = self.primary()
        while (token := self.peek()) is not None and token[1] in (".", "["):
            self.take()
            if token[1] == ".":
                kind, name = self.take()
                if kind != "ident":
                    raise self.fail(f"a property name must follow '.', not '{name[:40]}'")
                node = Member(node, Literal(name))
            else:
                node = Member(node, self.expression())
                self.take("]")
        return node

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "str":
            return Literal(value[1:-1].replace("''", "'"))
        if kind == "num":
            return Literal(float(value) if "." in value else int(value))
        if kind != "ident":
            raise self.fail(f"unexpected '{value[:40]}'")
        self.take("(")
        args: list[Node] = []
        if (token := self.peek()) is not None and token[1] == ")":
            self.take()
            return Call(value, ())
        while True:
            args.append(self.expression())
            kind, sep = self.take()
            if sep == ")":
                return Call(value, tuple(args))
            if sep != ",":
                raise self.fail(f"expected ',' or ')' but found '{sep[:40]}'")


def is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


def parse(text: str) -> Node:
    """`text` is the inside of "[...]"."""
    if not text.strip():
        raise TemplateError("The template language expression '' is not valid: it is empty.")
    return _Parser(text).parse()


class Scope(Protocol):
    def function(self, name: str) -> Callable[..., Any] | None: ...

    def lazy(self, name: str) -> bool: ...


def evaluate(node: Node, scope: Scope) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Member):
        return member(evaluate(node.target, scope), evaluate(node.key, scope))
    fn = scope.function(node.name.lower())
    if fn is None:
        raise TemplateError(
            f"The template function '{node.name[:60]}' is not valid. Please see https://aka.ms/arm-functions "
            "for usage details."
        )
    if scope.lazy(node.name.lower()):
        return fn(*[(lambda n=n: evaluate(n, scope)) for n in node.args])
    return fn(*[evaluate(n, scope) for n in node.args])


def member(target: Any, key: Any) -> Any:
    if isinstance(target, dict) and isinstance(key, str):
        for k, v in target.items():
            if k.lower() == key.lower():
                return v
        raise TemplateError(
            f"The language expression property '{key[:60]}' doesn't exist, available properties "
            f"are '{', '.join(list(target)[:20])}'."
        )
    if isinstance(target, list) and isinstance(key, int) and not isinstance(key, bool):
        if 0 <= key < len(target):
            return target[key]
        raise TemplateError(f"The language expression array index '{key}' is out of bounds.")
    raise TemplateError(
        f"The language expression property '{str(key)[:60]}' can't be evaluated on a value of type "
        f"'{type_name(target)}'."
    )


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return "Null" if value is None else type(value).__name__
