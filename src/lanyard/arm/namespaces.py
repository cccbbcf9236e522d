"""Resource provider namespaces: what `GET /subscriptions/{s}/providers[/{namespace}]` answers (the
resource types and api-versions az reads to pick a version), and the subscription-wide resource list
with its `$filter` (`/subscriptions/{s}/resources`), through which az finds a resource by name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from lanyard.arm import providers, storage, web
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import bad_request

# Namespaces whose resources live in the control plane but are not provider resources of TYPES.
_BUILT_IN_TYPES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "Microsoft.Resources": (
        ("resourceGroups", ("2024-11-01", "2024-03-01", "2022-09-01", "2021-04-01")),
        ("deployments", ("2024-11-01", "2024-03-01", "2022-09-01", "2021-04-01")),
        ("deployments/operations", ("2024-11-01", "2024-03-01", "2022-09-01", "2021-04-01")),
    ),
    "Microsoft.Authorization": (
        ("roleAssignments", ("2022-04-01", "2020-04-01-preview", "2015-07-01")),
        ("roleDefinitions", ("2022-04-01", "2018-01-01-preview", "2015-07-01")),
    ),
}

# POST /subscriptions/{s}/providers/{namespace}/checkNameAvailability: (namespace) -> (the type whose names
# are platform-wide, the check given the names taken).
NAME_CHECKS: dict[str, tuple[str, Callable[[object, set[str]], dict[str, Any]]]] = {
    "microsoft.web": (web.SITE_TYPE, web.check_name_availability),
    "microsoft.storage": (storage.ACCOUNT_TYPE, storage.check_name_availability),
}

# One `field eq 'value'` clause of ARM's resource-list filter; clauses are joined by `and`.
_CLAUSE = re.compile(r"^\s*(resourceGroup|resourceType|name)\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def _catalog() -> dict[str, list[dict[str, Any]]]:
    """namespace (canonical casing) -> its resourceTypes entries."""
    catalog: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for namespace, types in _BUILT_IN_TYPES.items():
        for name, versions in types:
            catalog[namespace].append(_type_entry(name, versions))
    for type_ in providers.TYPES.values():
        namespace, _, name = type_.full_type.partition("/")
        catalog[namespace].append(_type_entry(name, type_.api_versions))
    return dict(catalog)


def _type_entry(name: str, versions: tuple[str, ...]) -> dict[str, Any]:
    return {
        "resourceType": name,
        "locations": [],
        "apiVersions": list(versions),
        "defaultApiVersion": next((v for v in versions if "preview" not in v), versions[0]),
        "capabilities": "None",
    }


def namespace_json(sub: str, namespace: str) -> dict[str, Any]:
    catalog = _catalog()
    canonical = next((n for n in catalog if n.lower() == namespace.lower()), None)
    if canonical is None:
        raise ArmError(
            f"The resource namespace '{namespace[:80]}' is invalid.", code="InvalidResourceNamespace", status=404
        )
    return {
        "id": f"/subscriptions/{sub}/providers/{canonical}",
        "namespace": canonical,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": catalog[canonical],
    }


def namespaces_json(sub: str) -> dict[str, Any]:
    return {"value": [namespace_json(sub, n) for n in sorted(_catalog())]}


def parse_resource_filter(text: str) -> dict[str, str]:
    """`resourceGroup eq 'g' and resourceType eq 'T' and name eq 'n'` -> {field: value, ...} (lower-case
    field names). Anything else is refused with ARM's error rather than silently ignored."""
    wanted: dict[str, str] = {}
    if not text.strip():
        return wanted
    for clause in _AND.split(text.strip()):
        match = _CLAUSE.match(clause)
        if match is None:
            raise bad_request(
                f"Invalid $filter '{text[:200]}': supported are resourceGroup, resourceType and name with 'eq', "
                "joined by 'and'.",
                "InvalidFilterInQueryString",
            )
        wanted[match.group(1).lower()] = match.group(2).replace("''", "'")
    return wanted


def unsupported_action(namespace: str, action: str) -> ArmError:
    return ArmError(
        f"The action '{action[:60]}' of namespace '{namespace[:60]}' is not supported.",
        code="InvalidResourceType",
        status=404,
    )
