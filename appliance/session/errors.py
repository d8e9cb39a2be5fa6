"""The session's leaves of the error tree (``kiosk_core.errors.SessionError``)."""

from __future__ import annotations

from kiosk_core.errors import SessionError


class CatalogInvalid(SessionError, ValueError):
    """A service catalog (shipped, on disk or pushed) breaks the rules; ``problems`` lists every one."""

    code = "session.catalog_invalid"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: catalog rejected: " + "; ".join(self.problems))


class IntentRejected(SessionError, ValueError):
    """A UI intent that is unknown, malformed or not available on the current screen; changes nothing."""

    code = "session.intent_rejected"


class DocumentStoreError(SessionError, OSError):
    """A captured document could not be read, verified or stored encrypted."""

    code = "session.document_store"


class SnapshotInvalid(SessionError, ValueError):
    """A failover snapshot from the peer terminal is malformed, truncated, of another version or
    inconsistent (docs/session.md §10); refused, and nothing changes."""

    code = "session.snapshot_invalid"
