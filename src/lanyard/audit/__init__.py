"""The audit trail: every grant recorded before it is answered (docs/security.md, "The audit trail").

    record.py  records, the canonical encoding, the hash chain and its verification
    writer.py  group commit with a deadline: the Auditor every grant awaits
    sinks.py   the database table and JSON-lines files
    store.py   reading records, accepting the records host agents ship
    http.py    control-plane writes and refusals, recorded around the routes
    api.py     /lanyard/v1/audit (admins) and /lanyard/v1/agent/audit (host agents)
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine

from lanyard.audit.record import Chain, Event
from lanyard.audit.sinks import DatabaseSink, FileSink
from lanyard.audit.writer import NULL_AUDITOR, Auditor, GroupCommit, NullAuditor, Sink
from lanyard.config import AuditSettings
from lanyard.core.clock import Clock

__all__ = ["NULL_AUDITOR", "Auditor", "Event", "GroupCommit", "NullAuditor", "server_auditor"]


def server_auditor(settings: AuditSettings, engine: Engine, clock: Clock) -> GroupCommit | NullAuditor:
    """The auditor of one server process: its own chain (a new one per process start, so no two
    writers ever extend one chain and no lock is shared between nodes)."""
    if not settings.enabled:
        return NULL_AUDITOR
    sinks: list[Sink] = [DatabaseSink(engine)]
    if settings.file is not None:
        sinks.append(FileSink(settings.file))
    return GroupCommit(Chain(f"node:{uuid.uuid4()}"), sinks, settings.deadline, clock)
