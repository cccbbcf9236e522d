"""HTTP surface of the audit trail, ARM-shaped.

`GET /lanyard/v1/audit` lists records for operators (`lanyard audit list|verify`); it needs
`Lanyard/audit/read` on the platform's subscription. Host agents read their chain's head and ship
their journal with `GET|POST /lanyard/v1/agent/audit`, signed in as the host: records land on the
host's own chain only, each checked against the stored head and its hash.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.arm.http import ArmRoutes, arm_response, read_json_object
from lanyard.audit.store import MAX_PAGE, Query, ShipmentRefused, accept_shipment, head_of, list_records
from lanyard.core.errors import ArmError
from lanyard.storage import directory_repo as repo
from lanyard.storage.fleet_repo import HostRecord

READ = "Lanyard/audit/read"
MAX_SHIPMENT_BYTES = 8 * 1024 * 1024


def host_chain(host_id: str) -> str:
    return f"host:{host_id}"


def _time(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 (a trailing Z or offset; naive means UTC)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ArmError(f"{name} must be an ISO 8601 time or epoch seconds.", code="InvalidParameter") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    if not math.isfinite(number):
        raise ArmError(f"{name} must be a finite number.", code="InvalidParameter")
    return number


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 15:
        raise ArmError(f"{name} must be a non-negative integer.", code="InvalidParameter")
    return int(value)


class AuditRoutes:
    def __init__(self, arm: ArmRoutes, authenticate_host: Callable[[Request], Awaitable[HostRecord]]) -> None:
        self.arm = arm
        self.control = arm.control
        self.engine = arm.control.store.engine
        self.authenticate_host = authenticate_host

    def _authorize(self, caller: Any) -> None:
        with self.control.store.session() as s:
            subscriptions = repo.list_subscriptions(s, self.control.tenant_id)
            self.control.authorize(s, caller, READ, f"/subscriptions/{subscriptions[0].id}")

    async def list_records(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller)
            p = request.query_params
            query = Query(
                principal=(p.get("principal") or None),
                resource=(p.get("resource") or None),
                action=(p.get("action") or None),
                since=_time(p.get("since"), "since"),
                until=_time(p.get("until"), "until"),
                chain=(p.get("chain") or None),
                after=_int(p.get("after"), "after", 0),
                top=min(_int(p.get("top"), "top", MAX_PAGE), MAX_PAGE),
                by_chain=p.get("order") == "chain",
                newest_first=p.get("order") == "newest",
                before=_int(p.get("before"), "before", 0) or None,
            )
            if p.get("order") not in (None, "", "chain", "newest"):
                raise ArmError("order is 'chain' or 'newest' (or left out: oldest first).", code="InvalidParameter")
            for name in ("principal", "resource", "action", "chain"):
                if len(getattr(query, name) or "") > 1200:
                    raise ArmError(f"{name} is too long.", code="InvalidParameter")
            records, after = await run_in_threadpool(list_records, self.engine, query)
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        body: dict[str, Any] = {"value": records}
        if after is not None:
            params = dict(request.query_params)
            params["before" if query.newest_first else "after"] = str(after)
            body["nextLink"] = str(request.url.include_query_params(**params))
        return arm_response(200, body)

    async def agent_head(self, request: Request) -> Response:
        try:
            host = await self.authenticate_host(request)
            seq, sha = await run_in_threadpool(head_of, self.engine, host_chain(host.id))
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, {"chain": host_chain(host.id), "seq": seq, "sha256": sha})

    async def agent_ship(self, request: Request) -> Response:
        try:
            host = await self.authenticate_host(request)
            body = await read_json_object(request, MAX_SHIPMENT_BYTES)
            records = body.get("records")
            if not isinstance(records, list):
                raise ArmError("records must be a list.", code="InvalidRequestContent")
            chain = host_chain(host.id)
            try:
                seq, sha = await run_in_threadpool(accept_shipment, self.engine, chain, host.id, records)
            except ShipmentRefused as exc:
                return arm_response(
                    409,
                    {
                        "error": {"code": "AuditChainMismatch", "message": exc.message},
                        "head": {"seq": exc.head[0], "sha256": exc.head[1]},
                    },
                )
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, {"chain": chain, "seq": seq, "sha256": sha})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lanyard/v1/audit", self.list_records, methods=["GET"]),
            Route("/lanyard/v1/agent/audit", self.agent_head, methods=["GET"]),
            Route("/lanyard/v1/agent/audit", self.agent_ship, methods=["POST"]),
        ]
