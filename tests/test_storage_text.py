"""Storage refuses text the database or the audit hash cannot encode (an unpaired surrogate) with
a clear ValidationError, whoever calls it (app, CLI), and writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storage import repository as repo
from storage.db import transaction
from storage.errors import ValidationError
from storage.models import AuditEvent, Document

BAD = "pump \ud800 leak"


def test_a_title_or_text_with_a_lone_surrogate_is_refused(factory):
    with factory() as s:
        events = s.scalar(select(func.count()).select_from(AuditEvent))
    for kw in ({"title": BAD}, {"title": "ok", "text": BAD}):
        with pytest.raises(ValidationError, match="unpaired surrogate.*U\\+D800"):
            with transaction(factory) as s:
                repo.create_document(s, actor="alice", **kw)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Document)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == events


def test_a_reason_with_a_lone_surrogate_is_refused(factory):
    with transaction(factory) as s:
        doc = repo.create_document(s, actor="alice", title="t")
        doc_id, version = doc.id, doc.version
    with pytest.raises(ValidationError, match="unpaired surrogate"):
        with transaction(factory) as s:
            repo.update_document(s, doc_id, actor="alice", expected_version=version, text="x", reason=BAD)
    with factory() as s:
        assert s.get(Document, doc_id).text == ""
