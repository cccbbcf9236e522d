"""The pure template functions (no parameters, resources or scope): strings, logic, collections, ids."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable
from typing import Any

from lanyard.arm.template.expressions import TemplateError, type_name

# ARM's guid() is a name-based (v5) UUID over its arguments joined with '-', in this namespace.
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")
_FORMAT_ITEM = re.compile(r"\{(\d+)(?::[^}]*)?\}|\{\{|\}\}")


def _arity(name: str, args: tuple[Any, ...], low: int, high: int | None = None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        want = f"{low}" if high == low else f"{low} to {high}" if high is not None else f"at least {low}"
        raise TemplateError(f"The template language function '{name}' expects {want} argument(s), but got {len(args)}.")


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TemplateError(
            f"The template language function '{name}' expects its parameter to be a string. The provided "
            f"value is of type '{type_name(value)}'."
        )
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str | int | float):
        return str(value)
    import orjson

    return orjson.dumps(value).decode()


def concat(*args: Any) -> Any:
    _arity("concat", args, 1)
    if all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    if any(isinstance(a, list | dict) for a in args):
        raise TemplateError("The template language function 'concat' expects all strings or all arrays.")
    return "".join(_text(a) for a in args)


def format_(*args: Any) -> str:
    _arity("format", args, 1)
    pattern = _string("format", args[0])
    values = args[1:]

    def item(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        index = int(m.group(1))
        if index >= len(values):
            raise TemplateError(f"The template language function 'format' has no argument {index}.")
        return _text(values[index])

    return _FORMAT_ITEM.sub(item, pattern)


def unique_string(*args: Any) -> str:
    """13 lowercase base-32 characters, deterministic in its arguments (not Azure's exact values)."""
    _arity("uniqueString", args, 1)
    digest = hashlib.sha256("-".join(_string("uniqueString", a) for a in args).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


def guid(*args: Any) -> str:
    _arity("guid", args, 1)
    return str(uuid.uuid5(GUID_NAMESPACE, "-".join(_string("guid", a) for a in args)))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def equals(*args: Any) -> bool:
    _arity("equals", args, 2, 2)
    return _same(args[0], args[1])


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TemplateError(
            f"The template language function '{name}' expects boolean parameters. The provided value is of "
            f"type '{type_name(value)}'."
        )
    return value


def and_(*args: Any) -> bool:
    _arity("and", args, 2)
    return all([_bool("and", a) for a in args])


def or_(*args: Any) -> bool:
    _arity("or", args, 2)
    return any([_bool("or", a) for a in args])


def not_(*args: Any) -> bool:
    _arity("not", args, 1, 1)
    return not _bool("not", args[0])


def if_(*thunks: Callable[[], Any]) -> Any:
    _arity("if", thunks, 3, 3)
    # Only the branch taken is evaluated: `if(cond, reference(...), '')` must not touch a missing resource.
    return thunks[1]() if _bool("if", thunks[0]()) else thunks[2]()


def empty(*args: Any) -> bool:
    _arity("empty", args, 1, 1)
    value = args[0]
    if value is None:
        return True
    if isinstance(value, str | list | dict):
        return len(value) == 0
    raise TemplateError(f"The template language function 'empty' cannot be applied to a '{type_name(value)}'.")


def length(*args: Any) -> int:
    _arity("length", args, 1, 1)
    value = args[0]
    if isinstance(value, str | list | dict):
        return len(value)
    raise TemplateError(f"The template language function 'length' cannot be applied to a '{type_name(value)}'.")


def union(*args: Any) -> Any:
    _arity("union", args, 1)
    if all(isinstance(a, dict) for a in args):
        merged: dict[str, Any] = {}
        for a in args:
            for k, v in a.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = union(merged[k], v)
                else:
                    merged[k] = v
        return merged
    if all(isinstance(a, list) for a in args):
        out: list[Any] = []
        for a in args:
            out.extend(item for item in a if not any(_same(item, seen) for seen in out))
        return out
    raise TemplateError("The template language function 'union' expects all objects or all arrays.")


def contains(*args: Any) -> bool:
    _arity("contains", args, 2, 2)
    container, item = args
    if isinstance(container, str):
        return _text(item) in container
    if isinstance(container, dict):
        key = _text(item).lower()
        return any(k.lower() == key for k in container)
    if isinstance(container, list):
        return any(_same(item, x) for x in container)
    raise TemplateError(f"The template language function 'contains' cannot search a '{type_name(container)}'.")


def to_lower(*args: Any) -> str:
    _arity("toLower", args, 1, 1)
    return _string("toLower", args[0]).lower()


def to_upper(*args: Any) -> str:
    _arity("toUpper", args, 1, 1)
    return _string("toUpper", args[0]).upper()


def _constant(name: str, value: Any) -> Callable[..., Any]:
    def fn(*args: Any) -> Any:
        _arity(name, args, 0, 0)
        return value

    return fn


PURE: dict[str, Callable[..., Any]] = {
    "concat": concat,
    "format": format_,
    "uniquestring": unique_string,
    "guid": guid,
    "tolower": to_lower,
    "toupper": to_upper,
    "if": if_,
    "equals": equals,
    "and": and_,
    "or": or_,
    "not": not_,
    "empty": empty,
    "length": length,
    "union": union,
    "contains": contains,
    "true": _constant("true", True),
    "false": _constant("false", False),
    "null": _constant("null", None),
}
LAZY = frozenset({"if"})


def id_parts(fn: str, args: tuple[Any, ...]) -> tuple[list[str], str, list[str]]:
    """resourceId([sub], [group], type, name, ...): the type is the first argument with a '/'."""
    strings = [_string(fn, a) for a in args]
    type_at = next((i for i, a in enumerate(strings) if "/" in a), None)
    if type_at is None or type_at > 2:
        raise TemplateError(f"The template language function '{fn}' needs a resource type like 'Ns/type'.")
    return strings[:type_at], strings[type_at], strings[type_at + 1 :]


def join_id(prefix: str, fn: str, type_: str, names: list[str]) -> str:
    type_ = type_.rstrip("/")
    if type_.lower() == "microsoft.resources/resourcegroups" and len(names) == 1 and prefix.count("/") == 2:
        # A resource group's id has no provider segment.
        return f"{prefix.rstrip('/')}/resourceGroups/{names[0]}"
    namespace, *types = type_.split("/")
    if not types or len(names) != len(types):
        raise TemplateError(
            f"Unable to evaluate template language function '{fn}': the type '{type_[:120]}' requires "
            f"{len(types)} resource name argument(s)."
        )
    parts = [prefix.rstrip("/"), "providers", namespace]
    for t, n in zip(types, names, strict=True):
        parts += [t, n]
    return "/".join(parts)
