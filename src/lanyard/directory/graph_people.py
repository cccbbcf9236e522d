"""Graph's `/users` and `/groups` (with members), in the shapes `az ad user|group` and the Graph SDKs read.

Mounted with the rest of Graph (same administrators-only rule). Passwords arrive in
`passwordProfile.password`, are checked against the complexity rule and hashed with argon2id; no
answer ever carries one back.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.core.errors import GraphError
from lanyard.directory.graph import GraphRoutes, graph_json, is_member
from lanyard.directory.passwords import check_policy, hash_password
from lanyard.directory.service import iso
from lanyard.protocol.oauth2 import is_guid
from lanyard.storage import arm_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage import people_repo as people
from lanyard.storage.directory_repo import Session

_PROPS = r"(userPrincipalName|displayName|mail|mailNickname)"
_EQ = re.compile(r"\s*" + _PROPS + r"\s+eq\s+'((?:[^']|'')*)'\s*")
_STARTS = re.compile(r"\s*startswith\(\s*" + _PROPS + r"\s*,\s*'((?:[^']|'')*)'\s*\)\s*")
_AND = re.compile(r"\s*and\s+")
# Filters other than on the user principal name are applied to the tenant's objects as rendered,
# case-insensitively as Graph does; this many at most are looked at.
FILTER_SCAN = 100_000
_UPN = re.compile(r"^[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z0-9-]{2,63}$")
_NICKNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIRECTORY_OBJECT = re.compile(r"/directoryObjects/([0-9a-fA-F-]{36})/?$")
_USER_FIELDS = frozenset({"displayName", "accountEnabled", "passwordProfile", "mailNickname", "userPrincipalName"})


Clause = tuple[str, str, bool]  # (property, value, is-prefix)


def _force_change(profile: dict[str, Any]) -> bool | None:
    value = profile.get("forceChangePasswordNextSignIn")
    if value is not None and not isinstance(value, bool):
        raise GraphError("forceChangePasswordNextSignIn must be a boolean.", code="Request_BadRequest")
    return value


def parse_people_filter(raw: str | None) -> list[Clause] | None:
    """`prop eq 'v'` and `startswith(prop,'v')` clauses, joined by `and` (az joins two to find a group)."""
    if raw is None:
        return None
    clauses: list[Clause] = []
    rest = raw.strip()
    while True:
        for pattern, prefix in ((_EQ, False), (_STARTS, True)):
            match = pattern.match(rest)
            if match:
                clauses.append((match.group(1), match.group(2).replace("''", "'"), prefix))
                rest = rest[match.end() :]
                break
        else:
            raise GraphError(
                f"Unsupported or invalid query filter clause specified: {raw[:80]!r}.", code="Request_UnsupportedQuery"
            )
        if not rest.strip():
            return clauses
        joined = _AND.match(rest)
        if joined is None or len(clauses) >= 4:
            raise GraphError(
                f"Unsupported or invalid query filter clause specified: {raw[:80]!r}.", code="Request_UnsupportedQuery"
            )
        rest = rest[joined.end() :]


def matches_all(item: dict[str, Any], clauses: list[Clause]) -> bool:
    """Graph compares these string properties without regard to case."""
    for prop, value, prefix in clauses:
        have = str(item.get(prop) or "").lower()
        if not (have.startswith(value.lower()) if prefix else have == value.lower()):
            return False
    return True


def _not_found(ident: str) -> GraphError:
    return GraphError(
        f"Resource '{ident[:80]}' does not exist or one of its queried reference-property objects are not present.",
        code="Request_ResourceNotFound",
        status=404,
    )


def _text(body: dict[str, Any], name: str, *, required: bool = True, limit: int = 256) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise GraphError(f"Property '{name}' must be a string of 1 to {limit} characters.", code="Request_BadRequest")
    return value


class PeopleGraph:
    def __init__(self, graph: GraphRoutes) -> None:
        self.graph = graph
        self.directory = graph.directory
        self.clock = graph.directory.clock
        graph.object_finders.append(self.find_user_or_group)

    # -- rendering ----------------------------------------------------------------------------

    def user_json(self, u: people.UserRecord) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.user",
            "id": u.object_id,
            "userPrincipalName": u.user_principal_name,
            "displayName": u.display_name,
            "mailNickname": u.mail_nickname,
            "accountEnabled": u.account_enabled,
            "mail": None,
            "givenName": None,
            "surname": None,
            "jobTitle": None,
            "businessPhones": [],
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "createdDateTime": iso(u.created_at),
        }

    def group_json(self, g: people.GroupRecord) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.group",
            "id": g.object_id,
            "displayName": g.display_name,
            "mailNickname": g.mail_nickname,
            "description": g.description,
            "mailEnabled": False,
            "securityEnabled": True,
            "groupTypes": [],
            "mail": None,
            "createdDateTime": iso(g.created_at),
        }

    def find_user_or_group(self, s: Session, object_id: str, wanted: set[str], tenant_id: str) -> dict[str, Any] | None:
        """directoryObjects/getByIds for users and groups (graph.py)."""
        if "user" in wanted:
            user = people.get_user(s, object_id=object_id)
            if user is not None and user.tenant_id == tenant_id:
                return self.user_json(user)
        if "group" in wanted:
            group = people.get_group(s, object_id)
            if group is not None and group.tenant_id == tenant_id:
                return self.group_json(group)
        return None

    def _object_json(self, s: Session, object_id: str) -> dict[str, Any] | None:
        user = people.get_user(s, object_id=object_id)
        if user is not None:
            return self.user_json(user)
        group = people.get_group(s, object_id)
        if group is not None:
            return self.group_json(group)
        sp = dirrepo.get_principal(s, object_id=object_id)
        if sp is not None:
            return {"@odata.type": "#microsoft.graph.servicePrincipal", **self.graph.principal_json(s, sp)}
        return None

    # -- lookups ------------------------------------------------------------------------------

    def _user(self, s: Session, ident: str, tenant_id: str) -> people.UserRecord:
        """`/users/{id}` takes the object id or the user principal name, as Graph does."""
        if is_guid(ident):
            user = people.get_user(s, object_id=ident.lower())
        else:
            user = people.get_user(s, upn=ident) if len(ident) <= 256 else None
        if user is None or user.tenant_id != tenant_id:
            raise _not_found(ident)
        return user

    def _group(self, s: Session, ident: str, tenant_id: str) -> people.GroupRecord:
        group = people.get_group(s, self.directory.check_object_id(ident))
        if group is None or group.tenant_id != tenant_id:
            raise _not_found(ident)
        return group

    def _member_type(self, s: Session, object_id: str, tenant_id: str) -> str:
        user = people.get_user(s, object_id=object_id)
        if user is not None and user.tenant_id == tenant_id:
            return "User"
        group = people.get_group(s, object_id)
        if group is not None and group.tenant_id == tenant_id:
            return "Group"
        sp = dirrepo.get_principal(s, object_id=object_id)
        if sp is not None and sp.tenant_id == tenant_id:
            return "ServicePrincipal"
        raise _not_found(object_id)

    # -- users --------------------------------------------------------------------------------

    def create_user(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        upn = _text(body, "userPrincipalName")
        name = _text(body, "displayName")
        assert upn is not None and name is not None
        if not _UPN.match(upn):
            raise GraphError(
                "Invalid value specified for property 'userPrincipalName' of resource 'User'.",
                code="Request_BadRequest",
            )
        nickname = body.get("mailNickname") or upn.split("@", 1)[0]
        if not isinstance(nickname, str) or not _NICKNAME.match(nickname):
            raise GraphError("Invalid value specified for property 'mailNickname'.", code="Request_BadRequest")
        enabled = body.get("accountEnabled", True)
        if not isinstance(enabled, bool):
            raise GraphError("accountEnabled must be a boolean.", code="Request_BadRequest")
        profile = body.get("passwordProfile")
        if not isinstance(profile, dict):
            raise GraphError("Property 'passwordProfile' is required.", code="Request_BadRequest")
        password_hash = hash_password(check_policy(profile.get("password")))
        force_change = _force_change(profile)
        now = self.clock.now()
        duplicate = GraphError(
            "Another object with the same value for property userPrincipalName already exists.",
            code="Request_MultipleObjectsWithSameKeyValue",
        )
        try:
            with self.directory.store.session() as s:
                if people.get_user(s, upn=upn) is not None:
                    raise duplicate
                user = people.add_user(
                    s,
                    people.UserRecord(
                        str(uuid.uuid4()),
                        claims["tid"],
                        upn,
                        name,
                        nickname,
                        enabled,
                        password_hash,
                        now,
                        now,
                        bool(force_change),
                    ),
                )
        except IntegrityError as exc:  # the same name made at the same moment on another node
            raise duplicate from exc
        return graph_json({"@odata.context": self._context("users/$entity"), **self.user_json(user)}, 201)

    def list_users(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        clauses = parse_people_filter(request.query_params.get("$filter")) or []
        with self.directory.store.session() as s:
            first = next((c for c in clauses if c[0] == "userPrincipalName"), None)
            if first is not None:  # the indexed, case-folded column narrows first
                users = people.list_users(s, claims["tid"], field=first[0], value=first[1], prefix=first[2])
            else:
                users = people.list_users(s, claims["tid"], limit=FILTER_SCAN if clauses else 1000)
        items = [self.user_json(u) for u in users]
        return self.graph._collection("users", [u for u in items if matches_all(u, clauses)])

    def me(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        """The signed-in person (`az ad signed-in-user show`; `az keyvault create` reads its object id)."""
        if not is_member(claims):
            raise GraphError(
                "/me request is only valid with delegated authentication flow.", code="BadRequest", status=400
            )
        with self.directory.store.session() as s:
            return graph_json(self.user_json(self._user(s, claims["oid"], claims["tid"])))

    def get_user(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            return graph_json(self.user_json(self._user(s, request.path_params["id"], claims["tid"])))

    def patch_user(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        unknown = sorted(set(body) - _USER_FIELDS)
        if unknown:
            raise GraphError(f"Property '{unknown[0][:60]}' cannot be updated here.", code="Request_BadRequest")
        values: dict[str, object] = {}
        if "displayName" in body:
            values["display_name"] = _text(body, "displayName")
        if "mailNickname" in body:
            nickname = body["mailNickname"]
            if not isinstance(nickname, str) or not _NICKNAME.match(nickname):
                raise GraphError("Invalid value specified for property 'mailNickname'.", code="Request_BadRequest")
            values["mail_nickname"] = nickname
        if "userPrincipalName" in body:
            upn = _text(body, "userPrincipalName")
            if upn is None or not _UPN.match(upn):
                raise GraphError("Invalid value specified for property 'userPrincipalName'.", code="Request_BadRequest")
            values["user_principal_name"] = upn
        now = self.clock.now()
        if "accountEnabled" in body:
            if not isinstance(body["accountEnabled"], bool):
                raise GraphError("accountEnabled must be a boolean.", code="Request_BadRequest")
            values["account_enabled"] = body["accountEnabled"]
            if not body["accountEnabled"]:
                values["tokens_valid_from"] = now  # a disabled account's refresh tokens end now
        if "passwordProfile" in body:
            profile = body["passwordProfile"]
            if not isinstance(profile, dict):
                raise GraphError("passwordProfile must be an object.", code="Request_BadRequest")
            force_change = _force_change(profile)
            if "password" not in profile and force_change is None:
                raise GraphError(
                    "passwordProfile needs 'password' or 'forceChangePasswordNextSignIn'.", code="Request_BadRequest"
                )
            if "password" in profile:
                values["password_hash"] = hash_password(check_policy(profile.get("password")))
                values["tokens_valid_from"] = now  # as Entra: a new password revokes refresh tokens
            if force_change is not None:
                values["force_change_password"] = force_change
        try:
            self._update_user(request, claims, values)
        except IntegrityError as exc:
            raise GraphError(
                "Another object with the same value for property userPrincipalName already exists.",
                code="Request_MultipleObjectsWithSameKeyValue",
            ) from exc
        return Response(status_code=204)

    def _update_user(self, request: Request, claims: dict[str, Any], values: dict[str, object]) -> None:
        with self.directory.store.session() as s:
            user = self._user(s, request.path_params["id"], claims["tid"])
            if "user_principal_name" in values:
                other = people.get_user(s, upn=str(values["user_principal_name"]))
                if other is not None and other.object_id != user.object_id:
                    raise GraphError(
                        "Another object with the same value for property userPrincipalName already exists.",
                        code="Request_MultipleObjectsWithSameKeyValue",
                    )
            if values:
                people.update_user(s, user.object_id, **values)
            if "tokens_valid_from" in values:
                people.revoke_user_grants(s, user.object_id)
                people.end_user_sso_sessions(s, user.object_id)

    def delete_user(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            user = self._user(s, request.path_params["id"], claims["tid"])
            arm_repo.delete_assignments_for_principal(s, user.object_id)
            people.delete_user(s, user.object_id)
        return Response(status_code=204)

    def _subject(self, s: Session, request: Request, tenant_id: str) -> str:
        """The object id a `/users/{id}/...` (id or UPN) or `/directoryObjects|groups/{id}/...` path names."""
        ident = request.path_params["id"]
        if request.url.path.split("/v1.0/", 1)[-1].startswith("users/"):
            return self._user(s, ident, tenant_id).object_id
        object_id = self.directory.check_object_id(ident)
        self._member_type(s, object_id, tenant_id)
        return object_id

    def member_of(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        """Direct memberships of a user, service principal or group."""
        with self.directory.store.session() as s:
            object_id = self._subject(s, request, claims["tid"])
            groups = [people.get_group(s, g) for g in people.direct_groups_of(s, object_id)]
            items = [self.group_json(g) for g in groups if g is not None]
        return self.graph._collection("directoryObjects", items)

    def check_member_groups(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        """Which of `groupIds` the object is in, transitively (Graph's checkMemberGroups)."""
        wanted = body.get("groupIds")
        if not isinstance(wanted, list) or not all(isinstance(g, str) for g in wanted) or len(wanted) > 20:
            raise GraphError("groupIds must be a list of at most 20 group ids.", code="Request_BadRequest")
        with self.directory.store.session() as s:
            groups = people.groups_of(s, self._subject(s, request, claims["tid"]))
        return graph_json({"value": [g for g in wanted if g.lower() in groups]})

    # -- groups -------------------------------------------------------------------------------

    def create_group(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        name = _text(body, "displayName")
        nickname = _text(body, "mailNickname")
        description = _text(body, "description", required=False, limit=1024)
        assert name is not None and nickname is not None
        if not _NICKNAME.match(nickname):
            raise GraphError("Invalid value specified for property 'mailNickname'.", code="Request_BadRequest")
        if body.get("mailEnabled") is True or body.get("securityEnabled") is False or body.get("groupTypes"):
            raise GraphError(
                "Only security groups are supported (mailEnabled false, securityEnabled true, no groupTypes).",
                code="Request_BadRequest",
            )
        with self.directory.store.session() as s:
            group = people.add_group(
                s,
                people.GroupRecord(str(uuid.uuid4()), claims["tid"], name, nickname, description, self.clock.now()),
            )
        return graph_json({"@odata.context": self._context("groups/$entity"), **self.group_json(group)}, 201)

    def list_groups(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        clauses = parse_people_filter(request.query_params.get("$filter")) or []
        if any(prop == "userPrincipalName" for prop, _value, _prefix in clauses):
            raise GraphError("Unsupported filter property for groups.", code="Request_UnsupportedQuery")
        with self.directory.store.session() as s:
            groups = people.list_groups(s, claims["tid"], limit=FILTER_SCAN if clauses else 1000)
        items = [self.group_json(g) for g in groups]
        return self.graph._collection("groups", [g for g in items if matches_all(g, clauses)])

    def get_group(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            return graph_json(self.group_json(self._group(s, request.path_params["id"], claims["tid"])))

    def delete_group(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            group = self._group(s, request.path_params["id"], claims["tid"])
            arm_repo.delete_assignments_for_principal(s, group.object_id)
            people.delete_group(s, group.object_id)
        return Response(status_code=204)

    def list_members(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        with self.directory.store.session() as s:
            group = self._group(s, request.path_params["id"], claims["tid"])
            found = [self._object_json(s, m.member_id) for m in people.list_members(s, group.object_id)]
        return self.graph._collection("directoryObjects", [f for f in found if f is not None])

    def add_member(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        ref = body.get("@odata.id")
        match = _DIRECTORY_OBJECT.search(ref) if isinstance(ref, str) and len(ref) <= 2048 else None
        if match is None:
            raise GraphError(
                "Property '@odata.id' must reference a directory object (.../directoryObjects/{id}).",
                code="Request_BadRequest",
            )
        member_id = match.group(1).lower()
        if not is_guid(member_id):
            raise GraphError(f"Invalid object identifier '{member_id}'.", code="Request_BadRequest")
        exists = GraphError(
            "One or more added object references already exist for the following modified properties: 'members'.",
            code="Request_BadRequest",
        )
        try:
            with self.directory.store.session() as s:
                group = self._group(s, request.path_params["id"], claims["tid"])
                member_type = self._member_type(s, member_id, claims["tid"])
                if member_type == "Group" and (
                    member_id == group.object_id or member_id in people.groups_of(s, group.object_id)
                ):
                    raise GraphError("A group cannot contain itself, directly or through another group.")
                if not people.add_member(s, group.object_id, member_id, member_type, self.clock.now()):
                    raise exists
        except IntegrityError as exc:  # the same member added at the same moment elsewhere
            raise exists from exc
        return Response(status_code=204)

    def remove_member(self, request: Request, claims: dict[str, Any], body: dict[str, Any]) -> Response:
        member_id = self.directory.check_object_id(request.path_params["member"])
        with self.directory.store.session() as s:
            group = self._group(s, request.path_params["id"], claims["tid"])
            if not people.remove_member(s, group.object_id, member_id):
                raise _not_found(member_id)
        return Response(status_code=204)

    # -- plumbing -----------------------------------------------------------------------------

    def _context(self, what: str) -> str:
        return f"{self.graph.graph_base}/v1.0/$metadata#{what}"

    def routes(self) -> list[BaseRoute]:
        e = self.graph._endpoint
        return [
            Route("/me", e(self.me), methods=["GET"]),
            Route("/users", e(self.create_user), methods=["POST"]),
            Route("/users", e(self.list_users), methods=["GET"]),
            Route("/users/{id}", e(self.get_user), methods=["GET"]),
            Route("/users/{id}", e(self.patch_user), methods=["PATCH"]),
            Route("/users/{id}", e(self.delete_user), methods=["DELETE"]),
            Route("/users/{id}/memberOf", e(self.member_of), methods=["GET"]),
            Route("/users/{id}/checkMemberGroups", e(self.check_member_groups), methods=["POST"]),
            Route("/directoryObjects/{id}/memberOf", e(self.member_of), methods=["GET"]),
            Route("/directoryObjects/{id}/checkMemberGroups", e(self.check_member_groups), methods=["POST"]),
            Route("/groups", e(self.create_group), methods=["POST"]),
            Route("/groups", e(self.list_groups), methods=["GET"]),
            Route("/groups/{id}", e(self.get_group), methods=["GET"]),
            Route("/groups/{id}", e(self.delete_group), methods=["DELETE"]),
            Route("/groups/{id}/members", e(self.list_members), methods=["GET"]),
            Route("/groups/{id}/memberOf", e(self.member_of), methods=["GET"]),
            Route("/groups/{id}/members/$ref", e(self.add_member), methods=["POST"]),
            Route("/groups/{id}/members/{member}/$ref", e(self.remove_member), methods=["DELETE"]),
        ]
