"""HTTP surface of the signing-key lifecycle (`lanyard keys list|rotate|revoke`) and of the KEK
rotation's re-sealing (`lanyard kek rotate`), ARM-shaped.

Reading the key list needs read access on the platform's subscription; rotating and revoking need
`Microsoft.Authorization/signingKeys/write`, which Owner has and Contributor does not: whoever
controls the signing keys controls every token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.arm.http import ArmRoutes, arm_response
from lanyard.arm.service import Caller
from lanyard.audit.record import Event
from lanyard.core.errors import ArmError
from lanyard.crypto.barrier import Barrier
from lanyard.directory.rotation import KeyLifecycle, describe
from lanyard.storage import directory_repo as repo
from lanyard.storage.feed import list_nodes
from lanyard.storage.reseal import reseal_all

READ = "Microsoft.Authorization/signingKeys/read"
WRITE = "Microsoft.Authorization/signingKeys/write"
KEK_WRITE = "Microsoft.Authorization/keyEncryptionKeys/write"


class KeyRoutes:
    def __init__(self, lifecycle: KeyLifecycle, arm: ArmRoutes, settle: Callable[[], Awaitable[bool]]) -> None:
        self.lifecycle = lifecycle
        self.arm = arm
        self.settle = settle

    def _authorize(self, caller: Caller, action: str) -> None:
        control = self.arm.control
        with control.store.session() as s:
            subscriptions = repo.list_subscriptions(s, control.tenant_id)
            control.authorize(s, caller, action, f"/subscriptions/{subscriptions[0].id}")

    async def list_keys(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller, READ)
            with self.lifecycle.store.session() as s:
                records = repo.list_signing_keys(s)
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, {"value": [describe(r) for r in records]})

    async def rotate(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller, WRITE)
            immediate = request.query_params.get("immediate", "false").lower() == "true"
            record = await run_in_threadpool(lambda: self.lifecycle.rotate(immediate=immediate))
            await self.settle()
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, describe(record))

    async def revoke(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller, WRITE)
            record = await run_in_threadpool(self.lifecycle.revoke, str(request.path_params["kid"]))
            # Every node drops the key, and every agent the tokens it signed, before we answer.
            await self.settle()
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, describe(record))

    async def reseal(self, request: Request) -> Response:
        """`lanyard kek rotate`: re-seal every value under this node's active KEK (the node was
        started with the new key as LANYARD_KEK and the old one in LANYARD_KEK_PREVIOUS)."""
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller, KEK_WRITE)
            barrier: Barrier = self.lifecycle.barrier
            result = await run_in_threadpool(
                reseal_all,
                self.lifecycle.store,
                lambda blob, context: barrier.reseal(blob, context=context),
                lambda blob: Barrier.kek_id_of(blob) == barrier.active_id,
            )
            await self.settle()
            await self.lifecycle.audit.record(
                Event(
                    "credential.kek.reseal",
                    principal=caller.object_id,
                    app_id=caller.app_id,
                    detail={**result, "active_kek_id": barrier.active_id.hex()},
                )
            )
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, {**result, "activeKekId": barrier.active_id.hex()})

    async def nodes(self, request: Request) -> Response:
        """The platform's server processes (`lanyard status`)."""
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller, READ)
            with self.lifecycle.store.session() as s:
                found = list_nodes(s, self.lifecycle.clock.now())
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        return arm_response(200, {"value": found})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lanyard/v1/nodes", self.nodes, methods=["GET"]),
            Route("/lanyard/v1/keyEncryptionKey/reseal", self.reseal, methods=["POST"]),
            Route("/lanyard/v1/signingKeys", self.list_keys, methods=["GET"]),
            Route("/lanyard/v1/signingKeys/rotate", self.rotate, methods=["POST"]),
            Route("/lanyard/v1/signingKeys/{kid}/revoke", self.revoke, methods=["POST"]),
        ]
