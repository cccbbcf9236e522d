"""The documentation stands alone: docs/cli.md is what scripts/cli-reference prints from today's
command tree, and the README and docs/ point only at files inside this repository (a reader who
clones it has nothing else), each of which exists, at headings that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)=["']([^"']+)["']""", re.IGNORECASE)
# A document named in running text, `docs/protocols.md` or `bench/README.md`.
NAMED_DOCUMENT = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.md)\b")
# Notes that live beside the checkout, never in it.
OUTSIDE = re.compile(r"\.\./shared|/work/|\b(?:DESIGN|STYLE|REVIEW|SECURITY|PERFORMANCE|PROTOCOLS)\.md\b")


def test_cli_reference_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cli-reference")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "33"},  # the output must not depend on either
    ).stdout
    committed = (REPO / "docs" / "cli.md").read_text()
    assert generated.startswith("# CLI reference\n") and "## `lanyard up`" in generated
    assert generated == committed, (
        "docs/cli.md is stale: regenerate it with `.venv/bin/python scripts/cli-reference > docs/cli.md`"
    )


def test_the_cli_reference_covers_every_visible_command() -> None:
    import click

    from lanyard.cli.main import cli

    def paths(command: click.Command, path: list[str]) -> list[str]:
        found = [" ".join(path)]
        if isinstance(command, click.Group):
            for name, child in sorted(command.commands.items()):
                if not child.hidden:
                    found += paths(child, [*path, name])
        return found

    committed = (REPO / "docs" / "cli.md").read_text()
    missing = [p for p in paths(cli, ["lanyard"]) if f"## `{p}`\n" not in committed]
    assert not missing, missing
    assert "--detached-child" not in committed and "--worker-of" not in committed  # hidden options stay out


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in document.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def links(document: Path) -> list[str]:
    text = without_code_blocks(document.read_text())
    return LINK.findall(text) + REFERENCE.findall(text) + HTML_LINK.findall(text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_stay_inside_the_repository(document: Path) -> None:
    problems = []
    for target in links(document):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            problems.append(f"{target}: a link out of the repository (say it in words, or copy what matters in)")
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if path_part.startswith("/") or not resolved.is_relative_to(REPO):
            problems.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file in the repository")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(REPO)}")
    assert not problems, f"{document.relative_to(REPO)}: " + "; ".join(problems)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_documents_named_exist_and_nothing_points_beside_the_checkout(document: Path) -> None:
    text = document.read_text()
    outside = sorted({m.group(0) for m in OUTSIDE.finditer(text)})
    assert not outside, f"{document.relative_to(REPO)} points outside the repository: {outside}"
    missing = sorted(
        name
        for name in set(NAMED_DOCUMENT.findall(text))
        if not (REPO / name).exists() and not (document.parent / name).exists()
    )
    assert not missing, f"{document.relative_to(REPO)} names documents that do not exist: {missing}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The link and name checks above, run on a document that breaks each rule."""
    bad = tmp_path / "bad.md"
    bad.write_text(
        "# Title\n\nSee [design](../shared/DESIGN.md), [up](https://example.org/x), [here](#nowhere), "
        "[ok](#title).\n\n```\n[in code](../ignored.md)\n```\n"
    )
    assert links(bad) == ["../shared/DESIGN.md", "https://example.org/x", "#nowhere", "#title"]
    assert "title" in anchors(bad) and "nowhere" not in anchors(bad)
    assert {m.group(0) for m in OUTSIDE.finditer(bad.read_text())} == {"../shared", "DESIGN.md"}
    assert slug("`lanyard webapp run`") == "lanyard-webapp-run"
    assert slug("3. How a token flows") == "3-how-a-token-flows"
