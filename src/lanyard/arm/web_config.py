"""The config documents under a site or slot: `config/appsettings` (GET/PUT, POST list), `config/web` and
`config/slotConfigNames` (GET; PUT replaces, PATCH merges), and `config/configreferences/appsettings[/{name}]`,
each Key Vault reference's status (vault/references.py). All are kept with the site's record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lanyard.arm import web
from lanyard.arm.hooks import APPSETTINGS_KEY, Reply, SubRequest
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import bad_request, json_object, not_found
from lanyard.storage import arm_repo as repo
from lanyard.vault.references import is_config_references


def _properties(body: Any) -> dict[str, Any]:
    return json_object(json_object(body, "body").get("properties"), "properties")


def _not_allowed() -> ArmError:
    return ArmError("The requested method is not allowed.", code="MethodNotAllowed", status=405)


def config(request: SubRequest) -> Reply | None:
    """Routes `{site}/config…`; `request.owner` is the site or slot."""
    ref = request.ref
    if is_config_references(ref):
        return _config_references(request)
    if len(ref.types) != len(request.owner.types) + 1:
        return None
    if ref.is_collection:
        raise not_found("Only sites and slots have config resources.", "NotFound")
    if ref.name.lower() in web.CONFIG_DOCUMENTS:
        return _config_document(request)
    if ref.name.lower() != "appsettings":
        raise not_found(f"Config '{ref.name[:40]}' is not supported; use 'appsettings' or 'web'.", "NotFound")
    return _appsettings(request)


def _config_type(request: SubRequest) -> str:
    return f"{request.owner_type}/config"


def _appsettings(request: SubRequest) -> Reply:
    host, s, method = request.host, request.session, request.method
    reading = (method == "POST" and request.action == "list") or method == "GET"
    if not reading and method != "PUT":
        raise _not_allowed()
    verb = "list/action" if reading else "write"
    host.authorize(s, request.caller, f"{_config_type(request)}/{verb}", request.owner.id)
    site = host.require_resource(s, request.owner)
    config_id = f"{site.id}/config/appsettings"

    def shaped(settings: dict[str, str]) -> dict[str, Any]:
        return {
            "id": config_id,
            "name": "appsettings",
            "type": _config_type(request),
            "location": site.location,
            "properties": settings,
        }

    if reading:
        return Reply(200, shaped(dict(site.properties.get(APPSETTINGS_KEY, {}))))
    settings = _properties(request.body)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in settings.items()):
        raise bad_request("App settings must map names to string values.", "InvalidRequestContent")
    props = {**site.properties, APPSETTINGS_KEY: settings}
    repo.save_resource(s, replace(site, properties=props, updated_at=host.clock.now()))
    return Reply(200, shaped(settings))


def _config_references(request: SubRequest) -> Reply:
    """Reading them shows the settings' text, so it needs what listing them needs."""
    host, s, ref = request.host, request.session, request.ref
    site_ref = request.owner
    if len(ref.types) != len(site_ref.types) + 2 or host.references is None:
        raise not_found("Only sites and slots have config references.", "NotFound")
    if request.method != "GET" or request.action is not None:
        raise _not_allowed()
    host.authorize(s, request.caller, f"{_config_type(request)}/list/action", site_ref.id)
    site = host.require_resource(s, site_ref)
    settings = dict(site.properties.get(APPSETTINGS_KEY, {}))
    if not ref.is_collection:
        settings = {k: v for k, v in settings.items() if k.lower() == ref.name.lower()}
    documents = host.references.documents(s, site, settings)
    if ref.is_collection:
        return Reply(200, {"value": documents, "nextLink": None})
    if not documents:
        raise not_found(f"App setting '{ref.name[:100]}' is not a Key Vault reference of this app.", "NotFound")
    return Reply(200, documents[0])


def _config_document(request: SubRequest) -> Reply:
    host, s, method, ref = request.host, request.session, request.method, request.ref
    verbs = {"GET": "read", "PUT": "write", "PATCH": "write"}
    if method not in verbs:
        raise _not_allowed()
    host.authorize(s, request.caller, f"{_config_type(request)}/{verbs[method]}", request.owner.id)
    site = host.require_resource(s, request.owner)
    which = ref.name.lower()
    key = web.CONFIG_DOCUMENTS[which][0]
    document = dict(site.properties.get(key) or {})
    if method != "GET":
        document = web.site_config_update({} if method == "PUT" else document, _properties(request.body))
        props = {**site.properties, key: document}
        repo.save_resource(s, replace(site, properties=props, updated_at=host.clock.now()))
    name = "/".join(request.owner.names)
    return Reply(200, web.site_config_json(site.id, name, site.location, document, which))
