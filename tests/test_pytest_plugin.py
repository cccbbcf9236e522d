"""The pytest plugin from the outside: the sample project (examples/sample-app) runs its own tests,
unmodified azure-identity and SecretClient code, with the plugin found through its pytest11 entry
point, under pytest-xdist (a platform per worker); a run that uses none of its fixtures starts nothing."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanyard.testing.workload import call_function

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample-app"


def pytest_env() -> dict[str, str]:
    """This run's environment without its own pytest/xdist variables, so the inner run is a fresh one."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTEST_XDIST"))}


def test_the_entry_point_names_the_plugin() -> None:
    found = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "lanyard"]
    assert [ep.value for ep in found] == ["lanyard.testing.plugin"], "reinstall the package: pip install -e ."


@pytest.fixture
def short_folder() -> Iterator[Path]:
    """A short path: the inner run's platform homes sit under it, and their unix sockets must fit."""
    folder = Path(tempfile.mkdtemp(prefix="lp-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_sample_project_passes_with_a_platform_per_xdist_worker(short_folder: Path) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is a test extra: pip install -e '.[test]'")
    basetemp = short_folder / "bt"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", f"--basetemp={basetemp}"],
        cwd=SAMPLE,
        env=pytest_env(),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
    homes = sorted(p.relative_to(basetemp) for p in basetemp.glob("*/lanyard-home[0-9]*"))
    assert [h.parent.name for h in homes] == ["popen-gw0", "popen-gw1"], homes  # one platform per worker
    for home in homes:
        assert (basetemp / home / "pytest-platform.log").exists()
        assert not (basetemp / home / "endpoints.json").exists()  # each stopped at its session's end


def test_a_run_that_uses_no_fixture_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\n"
        "def test_plain(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.has_plugin('lanyard')\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('lanyard'))\n"
        "    assert loaded == ['lanyard', 'lanyard.testing', 'lanyard.testing.plugin'], loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}"],
        cwd=tmp_path,
        env=pytest_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert not list((tmp_path / "bt").glob("**/lanyard-home[0-9]*"))


def test_only_top_level_functions_run_as_the_app(tmp_path: Path) -> None:
    def nested() -> None:
        pass

    for func in (nested, lambda: None):
        with pytest.raises(TypeError, match="a function defined at the top level of a module"):
            call_function(tmp_path, ["webapp", "run", "-g", "g", "-n", "n"], func, (), {})
