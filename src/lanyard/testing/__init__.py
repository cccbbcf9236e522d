"""Testing code that uses managed identities against a real platform: the pytest plugin's fixtures
(lanyard.testing.plugin) and the pieces behind them, usable without pytest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lanyard.testing.platform import App, LanyardPlatform, LanyardVault, PlatformError, start
    from lanyard.testing.workload import WorkloadError

__all__ = ["App", "LanyardPlatform", "LanyardVault", "PlatformError", "WorkloadError", "start"]


def __getattr__(name: str) -> Any:
    # Lazy: the pytest plugin imports this package on every run; the platform code only when used.
    if name == "WorkloadError":
        from lanyard.testing import workload

        return workload.WorkloadError
    if name in __all__:
        from lanyard.testing import platform

        return getattr(platform, name)
    raise AttributeError(name)
