"""The RBAC decision: may this principal perform this action at this scope? Deny by default.

A caller is its own object id and every group it belongs to (directly or nested): an assignment to
any of them counts. An assignment applies at its scope and everything below it (segment-wise, case-insensitive). A role
grants an action when one of its `actions` patterns matches and none of its `notActions` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass
from functools import lru_cache

from lanyard.authz.roles import BY_ID, RoleDefinition


@dataclass(frozen=True)
class Assignment:
    scope: str
    role_definition_id: str
    principal_id: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@lru_cache(maxsize=1024)
def _pattern(glob: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in glob.lower().split("*")) + "$")


def matches(glob: str, action: str) -> bool:
    return bool(_pattern(glob).match(action.lower()))


def scope_covers(assignment_scope: str, target_scope: str) -> bool:
    outer = [s for s in assignment_scope.lower().split("/") if s]
    inner = [s for s in target_scope.lower().split("/") if s]
    return len(outer) <= len(inner) and inner[: len(outer)] == outer


def role_grants(role: RoleDefinition, action: str, *, data: bool = False) -> bool:
    allow, deny = (role.data_actions, role.not_data_actions) if data else (role.actions, role.not_actions)
    return any(matches(p, action) for p in allow) and not any(matches(p, action) for p in deny)


def decide(
    assignments: Iterable[Assignment], principal: str | Set[str], action: str, scope: str, *, data: bool = False
) -> Decision:
    """`principal`: the caller's object id, or the set of it and its groups' ids."""
    principals = {principal} if isinstance(principal, str) else principal
    for a in assignments:
        if a.principal_id not in principals or not scope_covers(a.scope, scope):
            continue
        role = BY_ID.get(a.role_definition_id.lower())
        if role is not None and role_grants(role, action, data=data):
            return Decision(True, f"granted by role '{role.name}' at scope '{a.scope}'")
    return Decision(False, f"no role assignment grants '{action}' at scope '{scope}'")
