"""What a resource type may add to the shared write/read path of the control plane, so per-type rules
live in the provider's own module (arm/web.py, ...) instead of in `if type ==` branches of the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Keys we keep inside the stored properties document that are not ARM properties.
SKU_KEY = "__sku"
APPSETTINGS_KEY = "__appsettings"

# (properties about to be stored, the previously stored ones or None) -> what to store.
Prepare = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, Any]]
# (public properties being shaped, read context) -> None; adds the fields the service computes.
Shape = Callable[[dict[str, Any], dict[str, Any]], None]
# POST {resource}/{action}: (the resource's ARM JSON, its stored properties) -> (status, content type, body).
Action = Callable[[dict[str, Any], dict[str, Any]], tuple[int, str, bytes]]
# (the kind the request and defaults settled on, the properties to store) -> the kind to store.
Kind = Callable[[str | None, dict[str, Any]], str | None]


@dataclass(frozen=True)
class ProviderHooks:
    prepare: Prepare | None = None
    shape: Shape | None = None
    kind: Kind | None = None
    # Microsoft.Web keeps a site's identity when a PUT carries no identity block (az webapp create on an
    # existing app relies on it); ARM's replace semantics drop it for other types.
    keeps_identity_on_put: bool = False
    actions: tuple[tuple[str, Action], ...] = ()

    def action(self, name: str) -> Action | None:
        return next((handler for key, handler in self.actions if key == name.lower()), None)


NO_HOOKS = ProviderHooks()
