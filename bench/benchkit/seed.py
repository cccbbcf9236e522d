"""Fill a platform's store with many identities fast, for the scale goal (G11).

Each identity is what `ad sp create-for-rbac` makes: an application, its service principal and one
client secret (stored as its peppered hash, as the directory stores it). The rows are written in
bulk through Lanyard's own Store, so each batch also appends its change-feed rows and every running
node drops whatever it cached. Managed identities are not seeded: each would need a platform-held
RSA key, which the write path makes one by one (~50 ms each), far too slow for 100k.
"""

from __future__ import annotations

import base64
import random
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import insert

from lanyard.crypto.barrier import Barrier
from lanyard.storage import directory_repo as repo
from lanyard.storage import models as m
from lanyard.storage.db import Store, make_engine

BATCH = 5_000
YEAR = 365 * 86400


@dataclass(frozen=True)
class Seeded:
    count: int
    seconds: float
    known: list[tuple[str, str]]  # (client id, client secret) of identities the caller may use


def seed_identities(
    database: str, kek_b64: str, tenant_id: str, count: int, known: int, prefix: str = "seed"
) -> Seeded:
    """Add `count` identities; hand back the credentials of `known` of them, spread over the whole set."""
    barrier = Barrier(base64.b64decode(kek_b64))
    pepper_hash = barrier.secret_hash
    chosen = set(random.sample(range(count), min(known, count)))
    store = Store(make_engine(database))
    started = time.perf_counter()
    kept: list[tuple[str, str]] = []
    try:
        with store.session() as s:  # the nodes' pepper: the derivation root sealed in the database
            root = repo.get_state(s, "derive_root")
        if root is not None and root[1]:
            barrier.use_derive_root(barrier.open(root[1], context="state:derive_root"))
        for first in range(0, count, BATCH):
            now = time.time()
            apps, principals, creds = [], [], []
            for i in range(first, min(first + BATCH, count)):
                app_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(30)
                name = f"{prefix}-{i:06d}"
                apps.append(
                    {
                        "object_id": str(uuid.uuid4()),
                        "app_id": app_id,
                        "tenant_id": tenant_id,
                        "display_name": name,
                        "created_at": now,
                    }
                )
                principals.append(
                    {
                        "object_id": str(uuid.uuid4()),
                        "app_id": app_id,
                        "tenant_id": tenant_id,
                        "display_name": name,
                        "kind": "Application",
                        "resource_id": None,
                        "created_at": now,
                    }
                )
                creds.append(
                    {
                        "key_id": str(uuid.uuid4()),
                        "app_id": app_id,
                        "kind": "password",
                        "display_name": "seeded",
                        "secret_hash": pepper_hash(secret),
                        "hint": secret[:3],
                        "start_at": now - 60,
                        "end_at": now + YEAR,
                        "created_at": now,
                    }
                )
                if i in chosen:
                    kept.append((app_id, secret))
            with store.session() as s:
                s.execute(insert(m.Application), apps)
                s.execute(insert(m.ServicePrincipal), principals)
                s.execute(insert(m.Credential), creds)
    finally:
        store.close()
    random.shuffle(kept)
    return Seeded(count, time.perf_counter() - started, kept)
