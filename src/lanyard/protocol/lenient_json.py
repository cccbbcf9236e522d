"""The JSON Resource Manager accepts beyond the standard: `//` and `/* */` comments, unquoted property
names, single-quoted strings and trailing commas (its parser is Json.NET's). az relies on it: `az deployment
group create` splices the template file's own text after an unquoted `template:` key, comments and all.

`to_strict` rewrites such text into standard JSON in one linear pass (then parsed by orjson); what is not
JSON even by these rules stays broken and fails there.
"""

from __future__ import annotations

import re

import orjson

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_LITERALS = frozenset({"true", "false", "null"})


class LenientJsonError(ValueError):
    pass


def _single_quoted(text: str, start: int) -> tuple[str, int]:
    """A '…' string at `start` as a standard "…" string; returns it and the index after it."""
    out = ['"']
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append("'" if nxt == "'" else c + nxt)
            i += 2
            continue
        if c == "'":
            out.append('"')
            return "".join(out), i + 1
        out.append('\\"' if c == '"' else c)
        i += 1
    raise LenientJsonError("unterminated string")


def to_strict(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise LenientJsonError("unterminated string")
            out.append(text[i : j + 1])
            i = j + 1
        elif c == "'":
            quoted, i = _single_quoted(text, i)
            out.append(quoted)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise LenientJsonError("unterminated comment")
            i = end + 2
        elif c in "}]":
            # drop a trailing comma before the closing bracket
            k = len(out) - 1
            while k >= 0 and out[k].isspace():
                k -= 1
            if k >= 0 and out[k] == ",":
                del out[k]
            out.append(c)
            i += 1
        elif c == "-" or c.isdigit():
            number = _NUMBER.match(text, i)
            if number is None:
                raise LenientJsonError("malformed number")
            out.append(number.group(0))
            i = number.end()
        else:
            match = _IDENTIFIER.match(text, i)
            if match is not None:
                word = match.group(0)
                out.append(word if word in _LITERALS else orjson.dumps(word).decode())
                i = match.end()
            else:
                out.append(c)
                i += 1
    return "".join(out)


def loads(raw: bytes) -> object:
    """Standard JSON first (the common case, and the fast path); the lenient rewrite only when that fails."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return orjson.loads(to_strict(raw.decode("utf-8")))
    except (UnicodeDecodeError, LenientJsonError, orjson.JSONDecodeError) as exc:
        raise LenientJsonError(str(exc)) from exc
