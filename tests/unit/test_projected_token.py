"""The projected token file of an AKS-style run: written whole, replaced by rename (a link planted at
its name is replaced, never followed), renewed at 80% of the token's life."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from lanyard.agent.projected import TOKEN_FILE, ProjectedToken
from lanyard.core.clock import FrozenClock


def test_the_file_is_replaced_whole_and_renewal_is_due_at_80_percent(tmp_path: Path) -> None:
    clock = FrozenClock(1_000_000.0)
    answers = iter(["first.token.value", "second.token.value"])

    async def fetch() -> dict[str, Any]:
        return {"token": next(answers), "expiresOn": int(clock.now()) + 100, "subject": "system:serviceaccount:a:b"}

    projected = ProjectedToken(tmp_path, fetch, None, clock)
    victim = tmp_path / "elsewhere"
    victim.write_text("untouched")
    os.symlink(victim, tmp_path / TOKEN_FILE)  # the workload owns the folder and may plant anything

    async def run() -> tuple[float, float]:
        first = await projected._renew()
        assert projected.path.read_text() == "first.token.value"
        clock.advance(80)
        second = await projected._renew()
        return first, second

    first_due, second_due = asyncio.run(run())
    assert first_due == 1_000_080.0 and second_due == 1_000_080.0 + 80
    assert not projected.path.is_symlink() and projected.path.read_text() == "second.token.value"
    assert victim.read_text() == "untouched"
    assert oct(projected.path.stat().st_mode & 0o777) == "0o400"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TOKEN_FILE, "elsewhere"])  # no leftovers
