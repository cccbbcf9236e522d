"""A Microsoft Graph-shaped API for applications and service principals (the part `az ad` uses).

Mounted at ``/graph/v1.0``; tokens must carry the Graph audience (``{base}/graph``). The directory's
administrators (the admin application made at first start) may do everything. A person signed in
with a delegated token has Entra's default member permissions: they may read users, groups,
applications and service principals (and themselves at ``/me``), and change nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.core.body import read_capped
from lanyard.core.errors import GraphError
from lanyard.directory.redirects import KINDS, RedirectRegistry
from lanyard.directory.service import Directory, iso
from lanyard.protocol.bearer import InvalidToken, bearer_token, normalize_audience
from lanyard.protocol.federation import NAME, RuleError, Spec, check_spec
from lanyard.storage import directory_repo as repo
from lanyard.storage import federation_repo as fedrepo

MAX_BODY = 256 * 1024
_FILTER = re.compile(r"^\s*(displayName|appId|servicePrincipalType)\s+eq\s+'((?:[^']|'')*)'\s*$")
_STARTSWITH_FILTER = re.compile(r"^\s*startswith\(\s*displayName\s*,\s*'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_SPN_FILTER = re.compile(r"^\s*servicePrincipalNames/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$")

# parse_filter's name for `startswith(displayName,'x')` (Graph compares case-insensitively).
DISPLAY_NAME_PREFIX = "displayName:startswith"
MAX_IDS = 1000

Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


def graph_json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def graph_error(exc: GraphError) -> Response:
    body = exc.body()
    body["error"]["innerError"] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    headers = {}
    if exc.status_value == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
    return Response(orjson.dumps(body), status_code=exc.status_value, media_type="application/json", headers=headers)


def parse_filter(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    match = _FILTER.match(raw)
    if match:
        return match.group(1), match.group(2).replace("''", "'")
    match = _STARTSWITH_FILTER.match(raw)
    if match:
        return DISPLAY_NAME_PREFIX, match.group(1).replace("''", "'")
    match = _SPN_FILTER.match(raw)
    if match:
        return "servicePrincipalNames", match.group(2).replace("''", "'")
    raise GraphError(
        f"Unsupported or invalid query filter clause specified: {raw[:80]!r}.", code="Request_UnsupportedQuery"
    )


# (session, object id in lower case, the types asked for, the caller's tenant) -> the object in its Graph
# shape with its @odata.type, or None when this finder has no such object of a wanted type.
ObjectFinder = Callable[[repo.Session, str, set[str], str], dict[str, Any] | None]
DIRECTORY_OBJECT_TYPES = ("user", "group", "serviceprincipal", "application")


# POSTs that only read (Graph's directory-object functions).
_READING_POSTS = ("/getByIds", "/checkMemberGroups", "/getMemberGroups", "/getMemberObjects")


def is_member(claims: dict[str, Any]) -> bool:
    """A person signed in with a delegated token (not an application acting as itself)."""
    return claims.get("idtyp") == "user" and "scp" in claims


def _reads(request: Request) -> bool:
    return request.method == "GET" or (request.method == "POST" and request.url.path.endswith(_READING_POSTS))


class GraphRoutes:
    def __init__(
        self,
        directory: Directory,
        graph_base: str,
        admin_object_ids: frozenset[str],
        settle: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.directory = directory
        self.settle = settle
        self.graph_base = graph_base.rstrip("/")
        self.audiences = frozenset(normalize_audience(a) for a in (self.graph_base, "https://graph.microsoft.com"))
        self.admins = admin_object_ids
        # Who can name a directory object by its id for getByIds; /users and /groups add theirs.
        self.object_finders: list[ObjectFinder] = [self._find_principal_or_application]

    # -- rendering ----------------------------------------------------------------------------

    def _credentials(self, s: repo.Session, app_id: str) -> dict[str, list[dict[str, Any]]]:
        passwords, keys = [], []
        for c in repo.list_credentials(s, app_id):
            common = {
                "keyId": c.key_id,
                "displayName": c.display_name,
                "startDateTime": iso(c.start_at),
                "endDateTime": iso(c.end_at),
            }
            if c.kind == "password":
                passwords.append({**common, "hint": c.hint, "secretText": None, "customKeyIdentifier": None})
            else:
                keys.append(
                    {
                        **common,
                        "type": "AsymmetricX509Cert",
                        "usage": "Verify",
                        "customKeyIdentifier": c.thumbprint_sha1,
                        "key": None,
                    }
                )
        return {"passwordCredentials": passwords, "keyCredentials": keys}

    def application_json(self, s: repo.Session, app: repo.ApplicationRecord) -> dict[str, Any]:
        return {
            "id": app.object_id,
            "appId": app.app_id,
            "displayName": app.display_name,
            "createdDateTime": iso(app.created_at),
            "signInAudience": "AzureADMyOrg",
            "publisherDomain": "lanyard.local",
            "identifierUris": [],
            "isFallbackPublicClient": app.fallback_public_client,
            **RedirectRegistry.loads(app.redirect_uris).graph_json(),
            **self._credentials(s, app.app_id),
        }

    @staticmethod
    def _apply_sign_in_settings(s: repo.Session, app: repo.ApplicationRecord, body: dict[str, Any]) -> None:
        """The redirect URIs and isFallbackPublicClient of a POST or PATCH body, checked before
        anything is written (a bad one leaves the application as it was)."""
        values: dict[str, object] = {}
        if any(kind in body for kind in KINDS):
            values["redirect_uris"] = RedirectRegistry.loads(app.redirect_uris).updated(body).dumps()
        if "isFallbackPublicClient" in body:
            fallback = body["isFallbackPublicClient"]
            if fallback is not None and not isinstance(fallback, bool):
                raise GraphError("isFallbackPublicClient must be a boolean or null.", code="Request_BadRequest")
            values["fallback_public_client"] = fallback
        if values:
            repo.update_application(s, app.object_id, **values)

    def principal_json(self, s: repo.Session, sp: repo.PrincipalRecord) -> dict[str, Any]:
        names = [sp.app_id]
        alternative: list[str] = []
        if sp.resource_id:
            names.append(sp.resource_id)
            alternative = [
                "isExplicit=False" if "/userAssignedIdentities/" not in sp.resource_id else "isExplicit=True",
                sp.resource_id,
            ]
        creds = (
            self._credentials(s, sp.app_id)
            if sp.kind == "Application"
            else {"passwordCredentials": [], "keyCredentials": []}
        )
        return {
            "id": sp.object_id,
            "appId": sp.app_id,
            "displayName": sp.display_name,
            "servicePrincipalType": sp.kind,
            "accountEnabled": True,
            "appOwnerOrganizationId": sp.tenant_id,
            "servicePrincipalNames": names,
            "alternativeNames": alternative,
            "createdDateTime": iso(sp.created_at),
            **creds,
        }

    # -- plumbing -----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> dict[str, Any]:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise GraphError("Access token is empty.", code="InvalidAuthenticationToken", status=401)
        try:
            claims = self.directory.verifier.verify(token, self.audiences)
        except InvalidToken as exc:
            raise GraphError(
                f"Access token validation failure: {exc}.", code="InvalidAuthenticationToken", status=401
            ) from exc
        if claims["oid"] not in self.admins and not (is_member(claims) and _reads(request)):
            raise GraphError(
                "Insufficient privileges to complete the operation.", code="Authorization_RequestDenied", status=403
            )
        return claims

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await read_capped(
            request.receive,
            MAX_BODY,
            lambda: GraphError("Request body is too large.", code="Request_BadRequest", status=413),
        )
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GraphError("Unable to read JSON request payload.", code="BadRequest") from exc
        if not isinstance(body, dict):
            raise GraphError("Request payload must be a JSON object.", code="BadRequest")
        return body

    def _endpoint(self, handler: Callable[[Request, dict[str, Any], dict[str, Any]], Response]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                claims = self._authorize(request)
                body = await self._body(request) if request.method in ("POST", "PATCH") else {}
                response = await run_in_threadpool(handler, request, claims, body)
                if self.settle is not None and request.method != "GET" and response.status_code < 300:
                    await self.settle()  # a new or removed credential holds on every node once we answer
                return response
            except GraphError as exc:
                return graph_error(exc)

        return endpoint  # type: ignore[return-value]

    def _app(self, s: repo.Session, request: Request) -> repo.ApplicationRecord:
        object_id = self.directory.check_object_id(request.path_params["id"])
        app = repo.get_application(s, object_id=object_id)
        if app is None:
            raise GraphError(
                f"Resource '{object_id}' does not exist or one of its queried reference-property "
                "objects are not present.",
                code="Request_ResourceNotFound",
                status=404,
            )
        return app

    def _sp(self, s: repo.Session, request: Request) -> repo.PrincipalRecord:
        object_id = self.directory.check_object_id(request.path_params["id"])
        sp = repo.get_principal(s, object_id=object_id)
        if sp is None:
            raise GraphError(
                f"Resource '{object_id}' does not exist or one of its queried reference-property "
                "objects are not present.",
                code="Request_ResourceNotFound",
                status=404,
            )
        return sp

    def _collection(self, kind: str, items: list[dict[str, Any]]) -> Response:
        return graph_json({"@odata.context": f"{self.graph_base}/v1.0/$metadata#{kind}", "value": items})

    # -- applications -------------------------------------------------------------------------

    def create_application(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        name = body.get("displayName")
        if not isinstance(name, str):
            raise GraphError("Property 'displayName' is required.", code="Request_BadRequest")
        with self.directory.store.session() as s:
            app = self.directory.create_application(s, claims["tid"], name)
            self._apply_sign_in_settings(s, app, body)
            app = repo.get_application(s, object_id=app.object_id) or app
            return graph_json(self.application_json(s, app), 201)

    def list_applications(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        flt = parse_filter(request.query_params.get("$filter"))
        with self.directory.store.session() as s:
            if flt is None:
                apps = repo.list_applications(s, claims["tid"])
            elif flt[0] == "displayName":
                apps = repo.list_applications(s, claims["tid"], display_name=flt[1])
            elif flt[0] == DISPLAY_NAME_PREFIX:
                prefix = flt[1].lower()
                apps = [
                    a for a in repo.list_applications(s, claims["tid"]) if a.display_name.lower().startswith(prefix)
                ]
            elif flt[0] == "appId":
                apps = repo.list_applications(s, claims["tid"], app_id=flt[1].lower())
            else:
                raise GraphError("Unsupported filter property for applications.", code="Request_UnsupportedQuery")
            return self._collection("applications", [self.application_json(s, a) for a in apps])

    def get_application(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            return graph_json(self.application_json(s, self._app(s, request)))

    def delete_application(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            app = self._app(s, request)
            fedrepo.delete_for_owner(s, app.object_id)
            repo.delete_application(s, app.object_id)
        return Response(status_code=204)

    def patch_application(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        """Graph replaces the whole keyCredentials collection: entries keep (keyId only) or add (key)."""
        with self.directory.store.session() as s:
            app = self._app(s, request)
            if "displayName" in body and body["displayName"] != app.display_name:
                raise GraphError("Changing displayName is not supported.", code="Request_BadRequest")
            self._apply_sign_in_settings(s, app, body)
            if "keyCredentials" in body:
                wanted = body["keyCredentials"]
                if not isinstance(wanted, list):
                    raise GraphError("keyCredentials must be an array.", code="Request_BadRequest")
                keep: set[str] = set()
                for entry in wanted:
                    if not isinstance(entry, dict):
                        raise GraphError("keyCredentials entries must be objects.", code="Request_BadRequest")
                    if entry.get("key"):
                        try:
                            der = base64.b64decode(str(entry["key"]), validate=True)
                        except (binascii.Error, ValueError) as exc:
                            raise GraphError("keyCredentials.key must be base64.", code="Request_BadRequest") from exc
                        name = entry.get("displayName")
                        keep.add(
                            self.directory.add_certificate(
                                s, app.app_id, der, name if isinstance(name, str) else None
                            ).key_id
                        )
                    elif isinstance(entry.get("keyId"), str):
                        keep.add(entry["keyId"])
                    else:
                        raise GraphError("Each keyCredential needs 'key' or 'keyId'.", code="Request_BadRequest")
                for existing in repo.list_credentials(s, app.app_id, "certificate"):
                    if existing.key_id not in keep:
                        repo.delete_credential(s, app.app_id, existing.key_id)
        return Response(status_code=204)

    def add_password(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        spec = body.get("passwordCredential") or {}
        if not isinstance(spec, dict):
            raise GraphError("passwordCredential must be an object.", code="Request_BadRequest")
        end_at = None
        if spec.get("endDateTime"):
            try:
                end_at = dt.datetime.fromisoformat(str(spec["endDateTime"]).replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                raise GraphError("endDateTime is not an ISO 8601 date.", code="Request_BadRequest") from exc
        name = spec.get("displayName")
        with self.directory.store.session() as s:
            app = self._app(s, request)
            record, secret = self.directory.add_password(s, app.app_id, name if isinstance(name, str) else None, end_at)
        return graph_json(
            {
                "customKeyIdentifier": None,
                "displayName": record.display_name,
                "endDateTime": iso(record.end_at),
                "hint": record.hint,
                "keyId": record.key_id,
                "secretText": secret,
                "startDateTime": iso(record.start_at),
            }
        )

    def remove_password(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        key_id = body.get("keyId")
        if not isinstance(key_id, str):
            raise GraphError("Property 'keyId' is required.", code="Request_BadRequest")
        with self.directory.store.session() as s:
            app = self._app(s, request)
            if not repo.delete_credential(s, app.app_id, key_id):
                raise GraphError(
                    f"No password credential found with keyId '{key_id[:40]}'.",
                    code="Request_ResourceNotFound",
                    status=404,
                )
        return Response(status_code=204)

    # -- federated identity credentials (docs/federation.md) -----------------------------------

    def federated_json(self, app: repo.ApplicationRecord, record: fedrepo.FederatedRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@odata.context": f"{self.graph_base}/v1.0/$metadata#applications('{app.object_id}')/"
            "federatedIdentityCredentials/$entity",
            "id": record.id,
            "name": record.name,
            "issuer": record.issuer,
            "subject": record.subject,
            "description": record.description,
            "audiences": list(record.audiences),
        }
        if record.claims_expression is not None:
            out["claimsMatchingExpression"] = {
                "value": record.claims_expression,
                "languageVersion": record.language_version,
            }
        return out

    def _federated(self, s: repo.Session, app: repo.ApplicationRecord, request: Request) -> fedrepo.FederatedRecord:
        wanted = str(request.path_params["fic"])
        found = fedrepo.get_by_id(s, app.object_id, wanted.lower()) or fedrepo.get(s, app.object_id, wanted)
        if found is None:
            raise GraphError(
                f"Resource '{wanted[:120]}' does not exist or one of its queried reference-property objects are "
                "not present.",
                code="Request_ResourceNotFound",
                status=404,
            )
        return found

    def _federated_spec(self, body: dict[str, Any], previous: fedrepo.FederatedRecord | None) -> Spec:
        def field(name: str, old: object) -> object:
            return body.get(name, old)

        expression = field(
            "claimsMatchingExpression",
            {"value": previous.claims_expression, "languageVersion": previous.language_version}
            if previous and previous.claims_expression
            else None,
        )
        if expression is not None and not isinstance(expression, dict):
            raise GraphError("claimsMatchingExpression must be an object {value, languageVersion}.")
        try:
            return check_spec(
                field("issuer", previous.issuer if previous else None),
                field("subject", previous.subject if previous else None),
                field("audiences", list(previous.audiences) if previous else None),
                expression.get("value") if expression else None,
                expression.get("languageVersion") if expression else None,
                field("description", previous.description if previous else None),
            )
        except RuleError as exc:
            raise GraphError(str(exc), code="Request_BadRequest") from exc

    def create_federated(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        name = body.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise GraphError(
                "name is required: 3-120 letters, digits, '-' or '_', starting with a letter or digit.",
                code="Request_BadRequest",
            )
        spec = self._federated_spec(body, None)
        with self.directory.store.session() as s:
            app = self._app(s, request)
            fedrepo.lock_owner(s, app.object_id)
            if fedrepo.get(s, app.object_id, name) is not None:
                raise GraphError(
                    f"A federated identity credential named '{name}' already exists on this application.",
                    code="Request_MultipleObjectsWithSameKeyValue",
                    status=409,
                )
            now = self.directory.clock.now()
            record = fedrepo.save(
                s,
                fedrepo.FederatedRecord(
                    str(uuid.uuid4()),
                    app.app_id,
                    "application",
                    app.object_id,
                    name,
                    spec.issuer,
                    spec.subject,
                    spec.expression,
                    spec.language_version,
                    spec.audiences,
                    spec.description,
                    now,
                    now,
                ),
            )
            return graph_json(self.federated_json(app, record), 201)

    def list_federated(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            app = self._app(s, request)
            items = []
            for record in fedrepo.list_for_owner(s, app.object_id):
                item = self.federated_json(app, record)
                item.pop("@odata.context")
                items.append(item)
        return graph_json(
            {
                "@odata.context": f"{self.graph_base}/v1.0/$metadata#applications('{app.object_id}')/"
                "federatedIdentityCredentials",
                "value": items,
            }
        )

    def get_federated(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            app = self._app(s, request)
            return graph_json(self.federated_json(app, self._federated(s, app, request)))

    def patch_federated(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        if "name" in body:
            raise GraphError(
                "The name of a federated identity credential cannot be changed.", code="Request_BadRequest"
            )
        with self.directory.store.session() as s:
            app = self._app(s, request)
            fedrepo.lock_owner(s, app.object_id)
            previous = self._federated(s, app, request)
            spec = self._federated_spec(body, previous)
            fedrepo.save(
                s,
                fedrepo.FederatedRecord(
                    previous.id,
                    app.app_id,
                    "application",
                    app.object_id,
                    previous.name,
                    spec.issuer,
                    spec.subject,
                    spec.expression,
                    spec.language_version,
                    spec.audiences,
                    spec.description,
                    previous.created_at,
                    self.directory.clock.now(),
                ),
            )
        return Response(status_code=204)

    def delete_federated(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            app = self._app(s, request)
            fedrepo.delete_one(s, app.object_id, self._federated(s, app, request).id)
        return Response(status_code=204)

    # -- service principals -------------------------------------------------------------------

    def create_principal(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        app_id = body.get("appId")
        if not isinstance(app_id, str):
            raise GraphError("Property 'appId' is required.", code="Request_BadRequest")
        with self.directory.store.session() as s:
            app = repo.get_application(s, app_id=app_id.lower())
            if app is None or app.tenant_id != claims["tid"]:
                raise GraphError(
                    f"The appId '{app_id[:40]}' of the service principal does not reference a valid "
                    "application object.",
                    code="Request_BadRequest",
                )
            sp = self.directory.create_principal_for(s, app)
            return graph_json(self.principal_json(s, sp), 201)

    def list_principals(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        flt = parse_filter(request.query_params.get("$filter"))
        with self.directory.store.session() as s:
            tid = claims["tid"]
            if flt is None:
                sps = repo.list_principals(s, tid)
            elif flt[0] == "displayName":
                sps = repo.list_principals(s, tid, display_name=flt[1])
            elif flt[0] == DISPLAY_NAME_PREFIX:
                prefix = flt[1].lower()
                sps = [p for p in repo.list_principals(s, tid) if p.display_name.lower().startswith(prefix)]
            elif flt[0] == "appId":
                sps = repo.list_principals(s, tid, app_id=flt[1].lower())
            elif flt[0] == "servicePrincipalType":
                sps = repo.list_principals(s, tid, kind=flt[1])
            else:
                sps = [
                    p
                    for p in repo.list_principals(s, tid)
                    if flt[1].lower() in (p.app_id, (p.resource_id or "").lower())
                ]
            return self._collection("servicePrincipals", [self.principal_json(s, p) for p in sps])

    def get_principal(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            return graph_json(self.principal_json(s, self._sp(s, request)))

    def delete_principal(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            sp = self._sp(s, request)
            if sp.kind == "ManagedIdentity":
                raise GraphError(
                    "A managed identity's service principal is deleted with the resource it "
                    "belongs to, not through the directory.",
                    code="Request_BadRequest",
                )
            repo.delete_principal(s, sp.object_id)
        return Response(status_code=204)

    # -- directory objects --------------------------------------------------------------------

    def get_by_ids(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        """POST /directoryObjects/getByIds: az resolves `--assignee` and names assignees with it. Ids that
        match nothing (or a type not asked for) are left out, as Graph does."""
        ids, types = body.get("ids"), body.get("types")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or not all(isinstance(i, str) for i in ids):
            raise GraphError(f"'ids' must be an array of 1 to {MAX_IDS} strings.", code="Request_BadRequest")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            raise GraphError("'types' must be an array of strings.", code="Request_BadRequest")
        wanted = {t.lower().removeprefix("microsoft.graph.") for t in types or DIRECTORY_OBJECT_TYPES}
        found: list[dict[str, Any]] = []
        with self.directory.store.session() as s:
            for raw in ids:
                object_id = raw.strip().lower()
                doc = next(
                    (d for finder in self.object_finders if (d := finder(s, object_id, wanted, claims["tid"]))), None
                )
                if doc is not None:
                    found.append(doc)
        return self._collection("directoryObjects", found)

    def _find_principal_or_application(
        self, s: repo.Session, object_id: str, wanted: set[str], tenant_id: str
    ) -> dict[str, Any] | None:
        if "serviceprincipal" in wanted:
            sp = repo.get_principal(s, object_id=object_id)
            if sp is not None and sp.tenant_id == tenant_id:
                return {"@odata.type": "#microsoft.graph.servicePrincipal", **self.principal_json(s, sp)}
        if "application" in wanted:
            app = repo.get_application(s, object_id=object_id)
            if app is not None and app.tenant_id == tenant_id:
                return {"@odata.type": "#microsoft.graph.application", **self.application_json(s, app)}
        return None

    def routes(self) -> list[BaseRoute]:
        from lanyard.directory.graph_people import PeopleGraph  # it builds on this module

        e = self._endpoint
        return [
            Route("/applications", e(self.create_application), methods=["POST"]),
            Route("/applications", e(self.list_applications), methods=["GET"]),
            Route("/applications/{id}", e(self.get_application), methods=["GET"]),
            Route("/applications/{id}", e(self.patch_application), methods=["PATCH"]),
            Route("/applications/{id}", e(self.delete_application), methods=["DELETE"]),
            Route("/applications/{id}/addPassword", e(self.add_password), methods=["POST"]),
            Route("/applications/{id}/removePassword", e(self.remove_password), methods=["POST"]),
            Route("/applications/{id}/federatedIdentityCredentials", e(self.create_federated), methods=["POST"]),
            Route("/applications/{id}/federatedIdentityCredentials", e(self.list_federated), methods=["GET"]),
            Route("/applications/{id}/federatedIdentityCredentials/{fic}", e(self.get_federated), methods=["GET"]),
            Route("/applications/{id}/federatedIdentityCredentials/{fic}", e(self.patch_federated), methods=["PATCH"]),
            Route(
                "/applications/{id}/federatedIdentityCredentials/{fic}", e(self.delete_federated), methods=["DELETE"]
            ),
            Route("/servicePrincipals", e(self.create_principal), methods=["POST"]),
            Route("/servicePrincipals", e(self.list_principals), methods=["GET"]),
            Route("/servicePrincipals/{id}", e(self.get_principal), methods=["GET"]),
            Route("/servicePrincipals/{id}", e(self.delete_principal), methods=["DELETE"]),
            *PeopleGraph(self).routes(),
            Route("/directoryObjects/getByIds", e(self.get_by_ids), methods=["POST"]),
        ]
