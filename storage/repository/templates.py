"""Report templates: created by an actor, read by id or name.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import NotFound, ValidationError
from storage.models import Template
from storage.repository.roles import ActorRef, _who, require


def create_template(session: Session, *, actor: ActorRef, name: str, body: str) -> Template:
    by = require(session, actor, "template.create")
    validate.text(name, "template name", max_chars=validate.MAX_TITLE_CHARS)
    validate.text(body, "template body", max_chars=validate.MAX_TEMPLATE_CHARS)
    if session.scalar(select(Template.id).where(Template.name == name)) is not None:
        raise ValidationError(f"a template named {name!r} already exists")
    template = Template(name=name, body=body, created_by_id=by.id if by else None)
    session.add(template)
    session.flush()
    append_event(session, *_who(by), "template.create", "template", template.id, new={"name": name, "body": body})
    return template


def get_template(session: Session, template_id: int) -> Template:
    template = session.get(Template, template_id)
    if template is None:
        raise NotFound(f"no template {template_id}")
    return template


def get_template_by_name(session: Session, name: str) -> Template:
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise NotFound(f"no template named {name!r}")
    return template


def list_templates(session: Session) -> list[Template]:
    return list(session.scalars(select(Template).order_by(Template.name)))
