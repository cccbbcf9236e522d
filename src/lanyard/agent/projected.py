"""The projected service-account token of an AKS-style run (docs/federation.md).

AKS's kubelet writes a pod's token into a file and rewrites it before it expires; the workload's
WorkloadIdentityCredential reads AZURE_FEDERATED_TOKEN_FILE again whenever it needs a new access
token. Here the agent asks the platform for a token signed by the workload issuer (for a workload
placed on this host only), writes it into the run's folder, and replaces it atomically (a new file
renamed over the old: a reader sees the old token or the new one, never half of either) once 80%
of its life has passed, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lanyard.core.clock import Clock

log = logging.getLogger("lanyard.agent.projected")
TOKEN_FILE = "azure-identity-token"  # noqa: S105 - a file name, as AKS names it
REFRESH_AT = 0.8
RETRY_SECONDS = 5.0

Fetch = Callable[[], Awaitable[dict[str, Any]]]


class ProjectedTokenError(Exception):
    pass


class ProjectedToken:
    def __init__(self, folder: Path, fetch: Fetch, owner: tuple[int, int] | None, clock: Clock) -> None:
        self.path = folder / TOKEN_FILE
        self.fetch = fetch
        self.owner = owner
        self.clock = clock
        self.subject = ""
        self._task: asyncio.Task[None] | None = None

    def _write(self, token: str) -> None:
        # The folder belongs to the workload's uid, which may swap names in it at any moment: the file
        # is made exclusively (never through a planted link) and owned through its descriptor, so a
        # root agent never changes the owner of anything but the file it just made.
        temporary = self.path.with_name(f".{TOKEN_FILE}.{secrets.token_hex(6)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            try:
                if self.owner is not None:
                    os.fchown(descriptor, *self.owner)
                data = memoryview(token.encode())
                while data:
                    data = data[os.write(descriptor, data) :]
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    async def _renew(self) -> float:
        """Write a new token; returns when the next one is due (epoch seconds)."""
        answer = await self.fetch()
        token, expires_on = answer.get("token"), answer.get("expiresOn")
        if not isinstance(token, str) or not isinstance(expires_on, int | float):
            raise ProjectedTokenError("the platform's answer has no token")
        self.subject = str(answer.get("subject", ""))
        now = self.clock.now()
        await asyncio.get_running_loop().run_in_executor(None, self._write, token)
        return now + max(1.0, (float(expires_on) - now) * REFRESH_AT)

    async def start(self) -> None:
        due = await self._renew()
        self._task = asyncio.get_running_loop().create_task(self._keep(due))

    async def _keep(self, due: float) -> None:
        while True:
            await asyncio.sleep(max(0.0, due - self.clock.now()))
            try:
                due = await self._renew()
            except Exception as exc:  # the old token stays until it expires; try again soon
                log.warning("could not renew a projected token for %s: %s", self.subject, type(exc).__name__)
                due = self.clock.now() + RETRY_SECONDS

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
