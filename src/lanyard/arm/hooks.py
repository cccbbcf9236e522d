"""What a resource type may add to the shared write/read/delete path of the control plane, so per-type
rules live in the provider's own module (arm/web.py, arm/vault.py, arm/identity.py, ...) instead of in
`if type ==` branches of the service.

The control plane calls the hooks inside the request's transaction and hands them `Host`: the part of
itself a provider may use (authorization, lookups, the directory), declared here so providers never
import the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lanyard.core.clock import Clock
from lanyard.protocol.arm import ResourceRef

if TYPE_CHECKING:
    from lanyard.arm.federated import FederatedCredentials
    from lanyard.storage import arm_repo
    from lanyard.storage import directory_repo as dirrepo
    from lanyard.vault.references import ReferenceStatuses

# Keys we keep inside the stored properties document that are not ARM properties.
SKU_KEY = "__sku"
APPSETTINGS_KEY = "__appsettings"


@dataclass(frozen=True)
class Caller:
    object_id: str
    app_id: str
    tenant_id: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


class PrincipalService(Protocol):
    """What the control plane needs from the directory, inside the caller's transaction."""

    def create_managed_identity(
        self, s: Any, tenant_id: str, display_name: str, resource_id: str
    ) -> dirrepo.PrincipalRecord: ...

    def delete_managed_identity(self, s: Any, object_id: str) -> None: ...

    def revoke_identity_credentials(self, s: Any, object_id: str) -> None: ...


class Host(Protocol):
    """The control plane as its providers see it."""

    tenant_id: str
    zone: str
    vault_suffix: str
    clock: Clock
    principals: PrincipalService
    references: ReferenceStatuses | None
    federated: FederatedCredentials

    def authorize(self, s: Any, caller: Caller, action: str, scope: str) -> None: ...

    def require_resource(self, s: Any, ref: ResourceRef) -> arm_repo.ResourceRecord: ...

    def drop_principal(self, s: Any, object_id: str) -> None: ...

    def page(self, items: list[dict[str, Any]], query: dict[str, str], path: str) -> Reply: ...


@dataclass(frozen=True)
class WriteRequest:
    """A PUT or PATCH of one resource, as the write path has settled it so far."""

    host: Host
    session: Any
    caller: Caller
    ref: ResourceRef
    key: str
    resource_id: str  # as first stored (its casing), or the request's for a new resource
    group_id: str
    previous: dict[str, Any] | None  # the stored properties before this write; None when it creates


@dataclass(frozen=True)
class SubRequest:
    """A request below a resource that its provider serves itself (sites/{name}/config/web, ...)."""

    host: Host
    session: Any
    method: str
    ref: ResourceRef  # the full path
    owner: ResourceRef  # the resource whose provider serves it
    owner_type: str  # its type, in the registry's casing
    action: str | None
    body: Any
    query: dict[str, str]
    caller: Caller


# (properties about to be stored, the previously stored ones or None) -> what to store.
Prepare = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, Any]]
# (properties about to be stored, the write) -> what to store; may look at other resources or authorize more.
Validate = Callable[[dict[str, Any], WriteRequest], dict[str, Any]]
# (the record about to be saved, the write) -> the record to save (e.g. with a principal it created).
OnWrite = Callable[["arm_repo.ResourceRecord", WriteRequest], "arm_repo.ResourceRecord"]
# (host, session, the record being deleted): what goes with it, before its row does.
OnDelete = Callable[[Host, Any, "arm_repo.ResourceRecord"], None]
# (host, session, the record being read) -> what `shape` needs beyond the record (its plan, ...).
ReadContext = Callable[[Host, Any, "arm_repo.ResourceRecord"], dict[str, Any]]
# (public properties being shaped, read context) -> None; adds the fields the service computes.
Shape = Callable[[dict[str, Any], dict[str, Any]], None]
# POST {resource}/{action}: (the resource's ARM JSON, its stored properties) -> (status, content type, body).
Action = Callable[[dict[str, Any], dict[str, Any]], tuple[int, str, bytes]]
# (the kind the request and defaults settled on, the properties to store) -> the kind to store.
Kind = Callable[[str | None, dict[str, Any]], str | None]
# The resource -> the display name of its system-assigned principal.
PrincipalName = Callable[[ResourceRef], str]
# A request below the resource -> its reply, or None when the provider does not serve that path after all.
Route = Callable[[SubRequest], Reply | None]


def _resource_name(ref: ResourceRef) -> str:
    return ref.name


@dataclass(frozen=True)
class ProviderHooks:
    prepare: Prepare | None = None
    validate: Validate | None = None
    on_write: OnWrite | None = None
    on_delete: OnDelete | None = None
    read_context: ReadContext | None = None
    shape: Shape | None = None
    kind: Kind | None = None
    # Azure names a system-assigned principal after its resource.
    principal_name: PrincipalName = _resource_name
    # Microsoft.Web keeps a site's identity when a PUT carries no identity block (az webapp create on an
    # existing app relies on it); ARM's replace semantics drop it for other types.
    keeps_identity_on_put: bool = False
    actions: tuple[tuple[str, Action], ...] = ()
    # Child types (lower case) served by the provider instead of the generic resource path.
    routes: tuple[tuple[str, Route], ...] = ()

    def action(self, name: str) -> Action | None:
        return next((handler for key, handler in self.actions if key == name.lower()), None)

    def route(self, child_type: str) -> Route | None:
        return next((handler for key, handler in self.routes if key == child_type.lower()), None)


NO_HOOKS = ProviderHooks()
