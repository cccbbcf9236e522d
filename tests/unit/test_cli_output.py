"""az's output options (-o, --query) on lanyard commands: rendered as az renders them."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from lanyard.cli.main import cli
from lanyard.cli.output import render

GROUPS = [
    {"id": "/subscriptions/s/resourceGroups/b", "name": "b", "location": "west", "tags": {"k": "v"}, "managedBy": None},
    {"id": "/subscriptions/s/resourceGroups/a", "name": "a", "location": "east", "tags": {}, "managedBy": None},
]


def test_json_is_sorted_with_two_space_indents() -> None:
    text = render({"b": 1, "a": "ü"}, "json")
    assert text == '{\n  "a": "ü",\n  "b": 1\n}\n'


def test_table_shows_scalar_fields_capitalised_without_id() -> None:
    lines = render(GROUPS, "table").splitlines()
    assert lines[0].split() == ["Location", "Name"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["west", "b"]
    assert lines[3].split() == ["east", "a"]


def test_table_with_columns_keeps_their_order_and_blank_cells() -> None:
    lines = render([{"name": "x", "state": None}], "table", columns=["state", "name"]).splitlines()
    assert lines[0].split() == ["State", "Name"]
    assert lines[2].split() == ["x"]


def test_tsv_one_line_per_item_values_in_key_order() -> None:
    text = render(GROUPS, "tsv")
    # id, location, managedBy (None: empty), name, tags (an object: empty cell)
    assert text.splitlines() == [
        "/subscriptions/s/resourceGroups/b\twest\t\tb\t",
        "/subscriptions/s/resourceGroups/a\teast\t\ta\t",
    ]
    assert render(["x", "y"], "tsv") == "x\ny\n"
    assert render(True, "tsv") == "true\n"
    assert render({"ids": [1, 2, 3]}, "tsv") == "3\n"


def test_yaml_and_none() -> None:
    assert yaml.safe_load(render(GROUPS, "yaml")) == GROUPS
    assert render(GROUPS, "none") == ""


def test_colour_variants_are_plain_off_a_terminal() -> None:
    assert render(GROUPS, "jsonc") == render(GROUPS, "json")
    assert render(GROUPS, "yamlc") == render(GROUPS, "yaml")


def _status(tmp_path: Path, *args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, ["--home", str(tmp_path / "nohome"), "status", *args])


def test_every_result_command_takes_the_options(tmp_path: Path) -> None:
    assert json.loads(_status(tmp_path).stdout)["running"] is False
    assert _status(tmp_path, "-o", "tsv", "--query", "running").stdout == "false\n"
    table = _status(tmp_path, "-o", "table").stdout.splitlines()
    assert table[0].split() == ["Home", "Running"]
    assert _status(tmp_path, "-o", "none").stdout == ""
    assert yaml.safe_load(_status(tmp_path, "--output", "yaml").stdout)["running"] is False


@pytest.mark.parametrize("bad", [["--query", "[?"], ["-o", "xml"]])
def test_bad_output_options_are_usage_errors(tmp_path: Path, bad: list[str]) -> None:
    result = _status(tmp_path, *bad)
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr
    assert result.stdout == ""


def test_foreground_commands_do_not_pretend_to_format() -> None:
    for path in (["up"], ["logs"], ["webapp", "run"], ["vm", "run"]):
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        assert "output" not in {p.name for p in command.params}, path
    groups = cli.commands["group"]
    assert isinstance(groups, click.Group)
    assert {"output", "query"} <= {p.name for p in groups.commands["list"].params}
