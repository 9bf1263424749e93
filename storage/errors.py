"""Domain errors raised by storage/. Each message is meant to be shown to a person as is.

Every error derives from StorageError, so a handler can catch that one class and print str(e).
"""

from __future__ import annotations

from datetime import datetime


class StorageError(Exception):
    """Base class: something about the stored data or the database refused the request."""


class NotFound(StorageError):
    """A user, document, run, step, ... that the request names does not exist."""


class ValidationError(StorageError):
    """The request itself is bad (empty or over-long text, span outside the document, ...)."""


class PermissionDenied(StorageError):
    """The actor's role may not do this."""


class StaleWrite(StorageError):
    """Optimistic locking: the row changed since the caller read it.

    who / when say who changed it last and when (UTC), so the UI can tell the second reviewer.
    """

    def __init__(self, object_desc: str, expected_version: int, current_version: int,
                 who: str | None, when: datetime | None) -> None:
        self.object_desc = object_desc
        self.expected_version = expected_version
        self.current_version = current_version
        self.who = who
        self.when = when
        when_s = when.strftime("%Y-%m-%d %H:%M:%S UTC") if when is not None else "an unknown time"
        super().__init__(
            f"{object_desc} was changed by {who or 'someone'} at {when_s} "
            f"(version {current_version}; you edited version {expected_version}). "
            "Your change was not saved: reload it, then apply your change again."
        )


class RunBusy(StorageError):
    """Another app process holds the lease of the run (it is generating it)."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or opened (file or folder gone, server down)."""


class DatabaseLocked(DatabaseUnavailable):
    """Another writer held the database for longer than the busy timeout."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The database (file, folder or server) refuses writes."""


class AuditRefused(StorageError):
    """The database refused to UPDATE or DELETE an audit event (the append-only trigger fired)."""


class ReviewRefused(StorageError):
    """A sign-off rule refused an approve / reject: the document is not awaiting review, or the
    reviewer wrote or changed it. Carries what the refusal's audit event (review.refused) records;
    the caller writes that event in a transaction of its own (storage.signoff does both)."""

    def __init__(self, message: str, *, rule: str, document_id: int, version: int, decision: str, actor: str,
                 role: str, status: str) -> None:
        self.rule = rule
        self.document_id = document_id
        self.version = version
        self.decision = decision
        self.actor = actor
        self.role = role
        self.status = status
        super().__init__(message)
