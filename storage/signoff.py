"""Signing off a document in transactions of its own: the review, or else its audited refusal.

A refused review rolls its transaction back, so the refusal's audit event (review.refused) cannot
ride in it; `sign` writes that event in a second transaction, which commits, and raises the
refusal again for the caller to show. Every caller that records reviews for people (the Review
screen) goes through here, so no refusal goes unrecorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from storage import repository as repo
from storage.db import transaction
from storage.errors import ReviewRefused


def sign(factory: sessionmaker[Session], **review: Any) -> int:
    """repo.record_review(**review) committed; returns the review's id. A ReviewRefused is audited
    (review.refused, committed) and raised again; any other error changes nothing."""
    try:
        with transaction(factory) as s:
            return repo.record_review(s, **review).id
    except ReviewRefused as refused:
        with transaction(factory) as s:
            repo.record_refusal(s, refused)
        raise
