"""az's output formats and --query, as the CLI renders a command's result (cli/output.py)."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from lanyard.cli.context import CliError, print_json
from lanyard.cli.output import FORMATS, add_output_options, render

ROWS = [
    {"name": "a", "location": "westeurope", "enabled": True, "tags": {"k": "v"}, "count": 2},
    {"name": "b", "location": "eastus", "enabled": False, "tags": {}, "count": None},
]


def test_json_is_the_default_and_query_applies_first() -> None:
    assert json.loads(render(ROWS)) == ROWS
    assert json.loads(render(ROWS, "json", "[?enabled].name")) == ["a"]
    assert render(ROWS, "tsv", "[].name") == "a\nb\n"
    assert render(ROWS, "none") == ""


def test_table_has_the_scalar_columns() -> None:
    lines = render(ROWS, "table").splitlines()
    assert lines[0].split() == ["Name", "Location", "Enabled", "Count"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["a", "westeurope", "True", "2"]
    assert lines[3].split() == ["b", "eastus", "False"]
    assert render("just text", "table").splitlines()[2] == "just text"


def test_tsv_one_line_per_item() -> None:
    assert render(ROWS, "tsv") == "a\twesteurope\tTrue\t2\nb\teastus\tFalse\t\n"
    assert render({"name": "x", "id": "/s/1"}, "tsv") == "x\t/s/1\n"


def test_yaml_round_trips_through_json_semantics() -> None:
    text = render({"name": "a", "id": "0123", "on": "yes", "size": 1.5, "empty": [], "nested": [{"k": None}]}, "yaml")
    assert text.splitlines() == [
        "name: a",
        'id: "0123"',
        '"on": "yes"',  # YAML 1.1 reads a plain on/yes as a boolean
        "size: 1.5",
        "empty: []",
        "nested:",
        "- k: null",  # a list under a key at the key's indent, as PyYAML (az's yaml) writes it
    ]


def test_jsonc_is_coloured_json() -> None:
    text = render({"a": "b", "c": 1}, "jsonc")
    assert "\x1b[" in text
    assert json.loads(__import__("re").sub(r"\x1b\[\d+m", "", text)) == {"a": "b", "c": 1}


def test_bad_query_is_a_cli_error() -> None:
    with pytest.raises(CliError, match="not a valid JMESPath query"):
        render(ROWS, "json", "[")


def test_every_command_gets_the_options() -> None:
    @click.group()
    def root() -> None:
        pass

    @root.command("show")
    def show() -> None:
        print_json({"name": "x", "values": [1, 2]})

    @root.command("up")
    def up() -> None:
        pass

    add_output_options(root)
    runner = CliRunner()
    assert runner.invoke(root, ["show", "--query", "values[1]"]).output == "2\n"
    assert runner.invoke(root, ["show", "-o", "yaml"]).output == "name: x\nvalues:\n- 1\n- 2\n"
    assert runner.invoke(root, ["show", "-o", "xml"]).exit_code != 0
    assert runner.invoke(root, ["up", "-o", "json"]).exit_code != 0  # streaming commands have no -o
    assert set(FORMATS) == {"json", "jsonc", "table", "tsv", "yaml", "none"}
