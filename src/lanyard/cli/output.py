"""az's output options on every command that prints a result: `-o json|jsonc|table|tsv|yaml|none` and
`--query` (JMESPath, applied before formatting, as az does).

The options are added to the command tree once (`add_output_options`) and remembered in the click
context, so commands keep printing through `emit` (context.print_json) without knowing about them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import Any

import click
import jmespath
from jmespath.exceptions import JMESPathError

FORMATS = ("json", "jsonc", "table", "tsv", "yaml", "none")
_META = "lanyard.output"
# Commands that stream or hand the terminal to something else, or already have their own -o.
NO_OUTPUT_OPTIONS = frozenset({"up", "agent", "logs", "run", "doctor"})
_PLAIN_YAML = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_ ./@+-]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})
_COLORS = {"key": "\x1b[94m", "string": "\x1b[32m", "literal": "\x1b[36m", "reset": "\x1b[0m"}


def _remember(name: str) -> Any:
    def callback(ctx: click.Context, _param: click.Parameter, value: object) -> object:
        if value is not None:
            ctx.meta.setdefault(_META, {})[name] = value
        return value

    return callback


def output_options(command: click.Command) -> click.Command:
    """Adds -o/--output and --query to one command (they do not reach its function)."""
    if any(p.name in ("output", "query") for p in command.params):
        return command
    command.params.append(
        click.Option(
            ["-o", "--output"],
            type=click.Choice(FORMATS),
            default=None,
            expose_value=False,
            callback=_remember("output"),
            help="Output format, as az's: json (default), jsonc, table, tsv, yaml, none.",
        )
    )
    command.params.append(
        click.Option(
            ["--query"],
            default=None,
            expose_value=False,
            callback=_remember("query"),
            help="A JMESPath query applied to the result before it is printed, as with az.",
        )
    )
    return command


def add_output_options(group: click.Group) -> None:
    """Every command under `group` gets the output options, except those in NO_OUTPUT_OPTIONS."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            add_output_options(command)
        elif name not in NO_OUTPUT_OPTIONS:
            output_options(command)


# -- formats --------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """A cell as az's table and tsv print it: booleans as True/False, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rows(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, dict) else {"Result": item} for item in items]


def to_table(value: Any) -> str:
    """az's table: one row per item, the items' scalar fields as columns (nested ones left out)."""
    rows = _rows(value)
    columns: list[str] = []
    for row in rows:
        for key, cell in row.items():
            if key not in columns and not isinstance(cell, dict | list):
                columns.append(key)
    if not columns:
        return ""
    cells = [[_scalar(row.get(c)) for c in columns] for row in rows]
    headers = [c[:1].upper() + c[1:] for c in columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def to_tsv(value: Any) -> str:
    """az's tsv: one line per item, its scalar values tab-separated (for scripts: `-o tsv --query`)."""
    if value is None:
        return ""
    items = value if isinstance(value, list) else [value]
    lines = []
    for item in items:
        if isinstance(item, dict):
            lines.append("\t".join(_scalar(v) for v in item.values() if not isinstance(v, dict | list)))
        elif isinstance(item, list):
            lines.append("\t".join(_scalar(v) for v in item if not isinstance(v, dict | list)))
        else:
            lines.append(_scalar(item))
    return "".join(line + "\n" for line in lines)


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN_YAML.match(text) and text.lower() not in _YAML_WORDS and not text.endswith(" "):
        return text
    return json.dumps(text)  # a JSON string is a double-quoted YAML scalar


def _yaml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"  # only ever called for empty containers and scalars
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def _yaml_lines(value: Any, indent: int) -> Iterable[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            yield pad + "{}"
        for key, item in value.items():
            head = f"{pad}{_yaml_scalar(str(key))}:"
            if isinstance(item, dict | list) and item:
                yield head
                yield from _yaml_lines(item, indent + (0 if isinstance(item, list) else 2))
            else:
                yield f"{head} {_yaml_inline(item)}"
    elif isinstance(value, list):
        if not value:
            yield pad + "[]"
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = list(_yaml_lines(item, indent + 2))
                yield f"{pad}- {nested[0].lstrip()}"
                yield from nested[1:]
            else:
                yield f"{pad}- {_yaml_inline(item)}"
    else:
        yield pad + _yaml_scalar(value)


def to_yaml(value: Any) -> str:
    return "\n".join(_yaml_lines(value, 0)) + "\n"


def to_jsonc(value: Any) -> str:
    """az's jsonc: the JSON output with keys, strings and literals coloured."""
    text = json.dumps(value, indent=2)

    def paint(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith('"'):
            kind = "key" if match.string[match.end() : match.end() + 1] == ":" else "string"
        else:
            kind = "literal"
        return f"{_COLORS[kind]}{token}{_COLORS['reset']}"

    return re.sub(r'"(?:[^"\\]|\\.)*"|\btrue\b|\bfalse\b|\bnull\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?', paint, text) + "\n"


def render(value: Any, output: str = "json", query: str | None = None) -> str:
    if query:
        try:
            value = jmespath.search(query, value)
        except JMESPathError as exc:
            from lanyard.cli.context import CliError

            reason = " ".join(str(exc).split())
            raise CliError(f"--query {query!r} is not a valid JMESPath query: {reason}") from exc
    if output == "none":
        return ""
    if output == "table":
        return to_table(value)
    if output == "tsv":
        return to_tsv(value)
    if output == "yaml":
        return to_yaml(value)
    if output == "jsonc":
        return to_jsonc(value)
    return json.dumps(value, indent=2) + "\n"


def emit(value: Any) -> None:
    """Print a command's result in the format its -o/--query asked for (json when none)."""
    ctx = click.get_current_context(silent=True)
    chosen: dict[str, Any] = ctx.meta.get(_META, {}) if ctx is not None else {}
    sys.stdout.write(render(value, str(chosen.get("output") or "json"), chosen.get("query")))
