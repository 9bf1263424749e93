"""Typed functions over the tables. Each takes the caller's Session first, uses select(), and
never commits: the caller commits, so a domain row and its audit event land together or not at all.

Glossary
  actor       the user doing it: a User or a user name; "system" is the CLIs' and start-up code's
              identity (never a login) and may only manage users and templates and read
  permission  what an act needs ("pin", "review", ...); PERMISSIONS says which roles have it
  expected_version  the document version the person saw; a write to any other version is refused
              with StaleWrite(who, when) and changes nothing
  span        [span_start, span_end): token positions in a run's step, or character positions in a
              document's text (edit unit "char")
  step bytes  token ids as little-endian int32, confidences as little-endian float16  # (L,) each
Errors: NotFound, ValidationError, PermissionDenied, StaleWrite, ReviewRefused (all StorageError).

One module per concept: roles, accounts (users and passwords), sessions (login sessions), logins
(signing in: throttle, lock, audit of attempts), templates, documents, runs (and their steps), pins,
edits, reviews, settings, feedback; positions holds the rule for where positions and pins go after a
length-changing edit. Import the names from here:
`from storage import repository as repo; repo.create_run(...)`.
"""

from __future__ import annotations

from storage.errors import (
    NotFound,
    PermissionDenied,
    ReviewRefused,
    RunBusy,
    StaleWrite,
    StorageError,
    ValidationError,
)
from storage.repository.roles import PERMISSIONS, ActorRef, can, require
from storage.repository.accounts import (
    hash_password,
    verify_password,
    set_password_hasher,
    create_user,
    get_user,
    find_user,
    list_users,
    set_role,
    disable_user,
    enable_user,
    set_password,
    check_password_hash,
)
from storage.repository.sessions import (
    create_login_session,
    login_session_user,
    end_login_session,
    end_user_sessions,
    count_login_sessions,
    logout,
)
from storage.repository.logins import (
    UNKNOWN_USER,
    DEFAULT_POLICY,
    LoginPolicy,
    LoginAttempt,
    server_secret,
    begin_attempt,
    end_attempt,
    finish_login,
    find_login_user,
    authenticate,
    user_locks,
    unlock_user,
)
from storage.repository.templates import create_template, get_template, get_template_by_name, list_templates
from storage.repository.documents import (
    create_document,
    get_document,
    list_documents,
    documents_awaiting_review,
    update_document,
)
from storage.repository.runs import (
    StepData,
    encode_token_ids,
    encode_confidences,
    decode_token_ids,
    decode_confidences,
    create_run,
    get_run,
    list_runs,
    last_open_run,
    set_run_status,
    record_step,
    get_step,
    list_steps,
    last_step,
)
from storage.repository.run_state import (
    KIND_CODES,
    RunStateData,
    get_run_state,
    run_state_version,
    save_run_state,
    claim_lease,
    renew_leases,
    release_lease,
    holds_lease,
    pause_interrupted,
)
from storage.repository.pins import add_pin, add_term_pins, remove_pin, active_pins
from storage.repository.edits import record_run_edit, record_text_edit, list_edits
from storage.repository.reviews import SIGNATURE_METHOD, authorship, record_review, record_refusal, list_reviews
from storage.repository.settings import (ALLOW_SELF_REVIEW, DEFAULT_MODEL, SETTINGS, get_setting, record_setting_refusal,
                                         set_setting)
from storage.repository.feedback import (
    NO_RUN,
    NO_TEMPLATE,
    EditPair,
    FeedbackCount,
    FeedbackGroup,
    edit_pairs,
    feedback_counts,
)

__all__ = [
    "StorageError", "RunBusy", "NotFound", "ValidationError", "PermissionDenied", "StaleWrite", "ReviewRefused", "PERMISSIONS",
    "ActorRef", "can", "require", "hash_password", "verify_password", "set_password_hasher", "create_user",
    "get_user", "find_user", "list_users", "set_role", "disable_user", "enable_user", "set_password",
    "authenticate", "check_password_hash", "create_login_session", "login_session_user", "end_login_session",
    "end_user_sessions", "count_login_sessions", "logout", "UNKNOWN_USER", "DEFAULT_POLICY", "LoginPolicy",
    "LoginAttempt",
    "server_secret", "begin_attempt", "end_attempt", "finish_login", "find_login_user", "user_locks", "unlock_user",
    "create_template", "get_template", "get_template_by_name", "list_templates",
    "create_document", "get_document", "list_documents", "documents_awaiting_review", "update_document",
    "StepData", "encode_token_ids", "encode_confidences", "decode_token_ids", "decode_confidences",
    "create_run", "get_run", "list_runs", "last_open_run", "set_run_status", "record_step", "get_step", "list_steps",
    "last_step", "add_pin", "add_term_pins", "remove_pin", "active_pins", "record_run_edit",
    "record_text_edit", "list_edits", "SIGNATURE_METHOD", "record_review", "record_refusal", "authorship",
    "list_reviews", "FeedbackCount",
    "FeedbackGroup", "feedback_counts", "EditPair", "edit_pairs", "NO_RUN", "NO_TEMPLATE", "ALLOW_SELF_REVIEW",
    "DEFAULT_MODEL", "SETTINGS", "get_setting", "set_setting", "record_setting_refusal", "KIND_CODES",
    "RunStateData", "get_run_state", "run_state_version", "save_run_state", "claim_lease", "renew_leases",
    "release_lease", "holds_lease", "pause_interrupted",
]
