"""The heavy objects, built once by `build_services` (never at import): the model checkpoint, its
noise, the database engine and session factories, the run registry, the login policy (how the
database-backed throttle holds), the login sessions kept in the database and the owners of the
page sessions of this process (app.sessions).

Glossary
  data_dir    the app's folder: the SQLite file, exports, downloads and Gradio's temporary files
  model_dir   the model folder (engine.checkpoint): assets/model when it holds a manifest.json,
              else assets/tiny (the same rule as .ci/dev)
  templates   assets/templates/*.txt, copied into the templates table on start (by "system")
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime imports are in build_services: importing this module builds nothing
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from app.runs import RunRegistry
    from app.sessions import LoginSessions, SessionOwners
    from engine.checkpoint import Checkpoint
    from engine.diffusion import Diffusion
    from engine.tokenizer import Tokenizer
    from storage.repository import LoginPolicy

log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
TEMPLATES_DIR = ASSETS / "templates"
ADMIN_PASSWORD_ENV = "DIFFDRAFT_ADMIN_PASSWORD"
ADMIN_NAME = "admin"


def default_model_dir() -> Path:
    """assets/model if it has a manifest.json, else assets/tiny."""
    trained = ASSETS / "model"
    return trained if (trained / "manifest.json").is_file() else ASSETS / "tiny"


@dataclass
class Limits:
    max_length: int = 2048  # tokens of a free-length draft
    max_steps: int = 512
    max_term_chars: int = 200
    max_edit_chars: int = 4000
    max_seed: int = 2**31 - 1


@dataclass
class Services:
    ckpt: Checkpoint
    diffusion: Diffusion  # the noise the model was trained with
    engine: Engine
    factory: sessionmaker[Session]  # writes
    reader: sessionmaker[Session]  # reads, never waits for writers
    data_dir: Path
    model_dir: Path
    runs: RunRegistry
    login_policy: LoginPolicy
    sessions: LoginSessions
    owners: SessionOwners
    limits: Limits = field(default_factory=Limits)
    step_delay_s: float = 0.0  # an artificial pause between steps (demos and tests only)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.ckpt.tokenizer

    @property
    def model_id(self) -> str:
        return str(self.ckpt.model_id)

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def close(self) -> None:
        self.engine.dispose()


def build_services(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
    data_dir: str | os.PathLike[str] = "data",
    threads: int | None = None,
    step_delay_s: float = 0.0,
    login_delay_s: float = 0.5,
    sync_templates: bool = True,
) -> Services:
    """Load the model, open (and migrate) the database, copy the shipped templates in.
    login_delay_s: the login throttle's base delay (LoginPolicy.base_delay_s; 0 turns the waits
    off, the lock stays)."""
    import torch

    from app.runs import RunRegistry
    from app.sessions import LoginSessions, SessionOwners
    from engine import checkpoint
    from storage.repository import LoginPolicy
    from storage.db import make_engine, make_session_factory, resolve_url
    from storage.migrations import migrate

    data = Path(data_dir).expanduser().resolve()
    for sub in ("", "exports", "downloads", "tmp"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    mdir = Path(model_dir) if model_dir is not None else default_model_dir()
    ckpt = checkpoint.load(mdir)
    url = resolve_url(db_url, data)
    engine = make_engine(url)
    migrate(engine)
    factory, reader = make_session_factory(engine), make_session_factory(engine, reads_only=True)
    svc = Services(
        ckpt=ckpt,
        diffusion=ckpt.diffusion(),
        engine=engine,
        factory=factory,
        reader=reader,
        data_dir=data,
        model_dir=mdir,
        runs=RunRegistry(),
        login_policy=LoginPolicy(base_delay_s=max(0.0, login_delay_s)),
        sessions=LoginSessions(factory, reader),
        owners=SessionOwners(),
        step_delay_s=step_delay_s,
    )
    if sync_templates:
        load_templates(svc)
    clean_temp(svc)
    return svc


def template_name(path: Path) -> str:
    """shift_handover.txt -> "Shift handover"."""
    return path.stem.replace("_", " ").strip().capitalize()


def load_templates(svc: Services, folder: Path = TEMPLATES_DIR) -> int:
    """Copy assets/templates/*.txt that the database lacks into it (as "system"); returns how many."""
    from storage import repository as repo
    from storage.db import transaction

    added = 0
    with transaction(svc.factory) as s:
        have = {t.name for t in repo.list_templates(s)}
        for path in sorted(folder.glob("*.txt")):
            name = template_name(path)
            if name not in have:
                repo.create_template(s, actor="system", name=name, body=path.read_text(encoding="utf-8"))
                added += 1
    return added


def ensure_admin(svc: Services, *, env: str = ADMIN_PASSWORD_ENV) -> str | None:
    """On a database without users, create user "admin" with the role that may manage users (so
    that it can add the others). Its password comes from $env or is generated; either way it must
    be changed at first login (no screen opens before). Returns the generated one-time password
    (None if none was generated or a user already existed).
    ValidationError, naming the variable, when $env is set to a password that breaks the rules."""
    from storage import repository as repo
    from storage import validate
    from storage.db import transaction
    from storage.errors import ValidationError
    from storage.models import ROLES

    role = next(r for r in ROLES if repo.can(r, "user.manage"))
    with transaction(svc.factory) as s:
        if repo.list_users(s):
            return None
        given = os.environ.get(env)
        password = given or secrets.token_urlsafe(12)  # 16 characters: keeps validate.PASSWORD_RULES
        if given:
            try:
                validate.password(given, ADMIN_NAME)
            except ValidationError as e:
                raise ValidationError(f"${env} cannot be the admin's password: {e} (the rules: "
                                      f"{validate.PASSWORD_RULES})") from None
        repo.create_user(s, ADMIN_NAME, role, password, actor="system", reason="first start: no users yet",
                         must_change_password=True)
    return None if given else password


def clean_temp(svc: Services) -> None:
    """Empty the data folder's temporary and download folders (files of a previous run)."""
    for folder in (svc.temp_dir, svc.downloads_dir):
        for p in folder.iterdir():
            try:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            except OSError as e:  # pragma: no cover - best effort
                log.warning("could not remove %s: %s", p, e)
