"""Microsoft.Compute/virtualMachines at the control plane: an identity block and a vmId derived from the
VM's id (so nothing needs storing for it)."""

from __future__ import annotations

import uuid
from typing import Any

from lanyard.arm.hooks import ProviderHooks

VM_TYPE = "Microsoft.Compute/virtualMachines"


def shape_vm(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    props.setdefault("vmId", str(uuid.uuid5(uuid.NAMESPACE_URL, str(ctx["id"]).lower())))


VM_HOOKS = ProviderHooks(shape=shape_vm)
