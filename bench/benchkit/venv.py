"""Re-run a benchmark under the repo's venv when it was started with an interpreter that lacks the
dependencies. Imports nothing outside the standard library, so it works before they are available."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def use_repo_venv() -> None:
    try:
        import cryptography  # noqa: F401
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        venv = Path(__file__).resolve().parent.parent.parent / ".venv"
        if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(venv / "bin" / "python"), [str(venv / "bin" / "python"), *sys.argv])  # noqa: S606
        raise
