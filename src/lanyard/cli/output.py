"""az's output options on every command that prints a result: `-o json|jsonc|table|tsv|yaml|yamlc|none`
and `--query` (JMESPath), rendered the way az renders them, so scripts written for az read ours alike.

json sorts keys with two-space indents; table shows each row's scalar fields (not id, type or etag),
first letter capitalised, sorted unless a query chose them; tsv writes one line per item with a dict's
values in key order, a nested list as its length and a nested object as an empty cell; the colour
variants colour only a terminal. A command that knows better columns passes them as `columns`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

FORMATS = ("json", "jsonc", "table", "tsv", "yaml", "yamlc", "none")
TABLE_SKIPS = frozenset({"id", "type", "etag"})
_META = "lanyard.output"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class OutputChoice:
    format: str = "json"
    query: ParsedResult | None = None


def _choice(ctx: click.Context) -> OutputChoice:
    choice = ctx.meta.get(_META)
    if not isinstance(choice, OutputChoice):
        choice = ctx.meta[_META] = OutputChoice(getattr(ctx.command.callback, "default_output", "json"))
    return choice


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _choice(ctx).format = value


def _set_query(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    try:
        _choice(ctx).query = jmespath.compile(value)
    except JMESPathError as exc:
        raise click.BadParameter(f"not a valid JMESPath expression: {exc}") from exc


def output_params(default: str = "json") -> list[click.Option]:
    return [
        click.Option(
            ["-o", "--output"],
            type=click.Choice(FORMATS),
            default=None,
            expose_value=False,
            callback=_set_format,
            help=f"Output format (default {default}).",
        ),
        click.Option(
            ["--query"],
            default=None,
            expose_value=False,
            callback=_set_query,
            help="JMESPath query applied to the result (as az's --query).",
        ),
    ]


def default_output(fmt: str) -> Callable[[F], F]:
    """Mark a command whose result reads best in another format by default (e.g. `doctor`: table)."""

    def mark(command: F) -> F:
        command.default_output = fmt  # type: ignore[attr-defined]
        return command

    return mark


def add_output_options(group: click.Group, *, skip: frozenset[str] = frozenset()) -> None:
    """Give every leaf command under `group` the output options, except those named in `skip` (by their
    full path, e.g. "logs"), which print text of their own."""

    def walk(command: click.Command, path: str) -> None:
        if path in skip:
            return
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
            return
        command.params.extend(output_params(getattr(command.callback, "default_output", "json")))

    walk(group, "")


def print_result(value: Any, *, columns: Sequence[str] | None = None) -> None:
    """Print a command's result in the format and through the query the user chose."""
    ctx = click.get_current_context(silent=True)
    choice = _choice(ctx) if ctx is not None else OutputChoice()
    if choice.query is not None:
        value = choice.query.search(value)
        columns = None  # the query chose the fields
    sys.stdout.write(render(value, choice.format, columns=columns, sort=choice.query is None))


def render(value: Any, fmt: str, *, columns: Sequence[str] | None = None, sort: bool = True) -> str:
    tty = sys.stdout.isatty()
    if fmt == "none":
        return ""
    if fmt in ("json", "jsonc"):
        text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        return _colour(text, "json") if fmt == "jsonc" and tty else text
    if fmt in ("yaml", "yamlc"):
        import yaml

        text = str(yaml.safe_dump(value, default_flow_style=False, allow_unicode=True))
        return _colour(text, "yaml") if fmt == "yamlc" and tty else text
    rows = value if isinstance(value, list) else [value]
    if fmt == "tsv":
        return "".join(_tsv_row(row) + "\n" for row in rows)
    return _table(rows, columns, sort)


def _colour(text: str, lexer: str) -> str:
    from rich.console import Console
    from rich.syntax import Syntax

    console = Console(force_terminal=True, width=10_000, highlight=False)
    with console.capture() as captured:
        console.print(Syntax(text.rstrip("\n"), lexer, background_color="default", word_wrap=False))
    return captured.get()


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return "" if value is None else str(value)


def _tsv_row(row: Any) -> str:
    if isinstance(row, dict):
        return "\t".join(_tsv_cell(v) for _, v in sorted(row.items()))
    if isinstance(row, list):
        return "\t".join(_tsv_cell(v) for v in row)
    if isinstance(row, bool):
        return str(row).lower()
    return _tsv_cell(row)


def _table_row(item: Any, columns: Sequence[str] | None, sort: bool) -> dict[str, Any]:
    if isinstance(item, dict):
        if columns is not None:
            return {_title(c): _cell(item.get(c)) for c in columns}
        keys = sorted(item) if sort else list(item)
        return {
            _title(k): item[k]
            for k in keys
            if k not in TABLE_SKIPS and item[k] is not None and not isinstance(item[k], (list, dict))
        }
    if isinstance(item, list):
        return {f"Column{i + 1}": v for i, v in enumerate(item)}
    return {"Result": item}


def _title(key: str) -> str:
    return key[:1].upper() + key[1:]


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _table(rows: list[Any], columns: Sequence[str] | None, sort: bool) -> str:
    from tabulate import tabulate

    data = [_table_row(item, columns, sort) for item in rows]
    if not any(data):
        return ""
    return str(tabulate(data, headers="keys", tablefmt="simple", disable_numparse=True)) + "\n"


__all__ = ["FORMATS", "add_output_options", "default_output", "print_result", "render"]
