"""Re-sealing every sealed value under the active key-encryption key (`lanyard kek rotate`).

Each sealed column is bound to its row by the context it was sealed with; this module is the one
place that knows every such column and its context. Rows are read in batches in key order and each
is replaced only if it still holds the value that was read (compare and set), so a write made
meanwhile (sealed under the active key already) is never overwritten. Reads keep working
throughout: a node holding both keys opens either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_, update

from lanyard.storage import models as m
from lanyard.storage.db import Store

Reseal = Callable[[bytes, str], "bytes | None"]  # (blob, context) -> new blob, or None if current
BATCH = 200


@dataclass(frozen=True)
class _Sealed:
    model: Any
    keys: tuple[str, ...]
    column: str
    context: Callable[[Any], str]


SEALED = (
    _Sealed(m.PlatformState, ("name",), "sealed", lambda r: f"state:{r.name}"),
    _Sealed(m.SigningKey, ("kid",), "sealed_private_key", lambda r: f"signing_key:{r.kid}"),
    _Sealed(m.Credential, ("key_id",), "sealed_private_key", lambda r: f"credential:{r.key_id}"),
    _Sealed(
        m.SecretVersionRow,
        ("vault_key", "name_key", "version"),
        "sealed_value",
        lambda r: f"secret:{r.vault_key}:{r.name_key}:{r.version}",
    ),
    _Sealed(m.PortalSession, ("id_hash",), "sealed", lambda r: f"portal_session:{r.id_hash}"),
)


def reseal_all(store: Store, reseal: Reseal, current: Callable[[bytes], bool]) -> dict[str, int]:
    """Re-seal every value `current` says is not under the active KEK; returns how many were
    re-sealed and how many are still not current (0 once the rotation is complete)."""
    resealed = 0
    for spec in SEALED:
        resealed += _reseal_table(store, spec, reseal)
    return {"resealed": resealed, "remaining": count_not_current(store, current)}


def _reseal_table(store: Store, spec: _Sealed, reseal: Reseal) -> int:
    column = getattr(spec.model, spec.column)
    keys = [getattr(spec.model, k) for k in spec.keys]
    done = 0
    after: tuple[Any, ...] | None = None
    while True:
        with store.session() as s:
            q = select(spec.model).where(column.is_not(None)).order_by(*keys).limit(BATCH)
            if after is not None:
                q = q.where(tuple_(*keys) > after)
            rows = list(s.scalars(q))
            for row in rows:
                blob = getattr(row, spec.column)
                if not blob:
                    continue  # a revoked signing key: its key was destroyed
                fresh = reseal(bytes(blob), spec.context(row))
                if fresh is None:
                    continue
                match = [k == getattr(row, k.key) for k in keys]
                s.execute(
                    update(spec.model).where(*match, column == blob).values({spec.column: fresh}),
                    execution_options={"synchronize_session": False},
                )
                done += 1
            if rows:
                after = tuple(getattr(rows[-1], k) for k in spec.keys)
        if len(rows) < BATCH:
            return done


def count_not_current(store: Store, current: Callable[[bytes], bool]) -> int:
    remaining = 0
    with store.session() as s:
        for spec in SEALED:
            column = getattr(spec.model, spec.column)
            for blob in s.scalars(select(column).where(column.is_not(None))):
                if blob and not current(bytes(blob)):
                    remaining += 1
    return remaining
