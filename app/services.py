"""The heavy objects, built once by `build_services` (never at import): the model versions (the
default one's checkpoint and noise), the denoiser batchers, the database engine and session
factories, the run registry, the login policy (how the database-backed throttle holds), the login
sessions kept in the database and the owners of the page sessions of this process (app.sessions).

Glossary
  data_dir    the app's folder: the SQLite file, exports, downloads and Gradio's temporary files
  model_dir   the model folder (engine.checkpoint): assets/model when it holds a manifest.json,
              else assets/tiny (the same rule as .ci/dev)
  models      app.models.ModelVersions: model_dir and the fine-tunes under data_dir/models/;
              `ckpt` is the default version's checkpoint, which follows an admin's promotion
  templates   assets/templates/*.txt, copied into the templates table on start (by "system")
  denoiser    what the drafts' samplers call: the batcher (engine.batching), which runs the steps
              of all drafts streaming at that moment as one forward, or the model itself when
              built without batching
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime imports are in build_services: importing this module builds nothing
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from app.models import ModelVersions
    from app.runs import RunRegistry
    from app.sessions import LoginSessions, SessionOwners
    from engine.batching import Batcher
    from engine.checkpoint import Checkpoint
    from engine.diffusion import Denoiser, Diffusion
    from engine.tokenizer import Tokenizer
    from storage.repository import LoginPolicy

log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
TEMPLATES_DIR = ASSETS / "templates"
ADMIN_PASSWORD_ENV = "DIFFDRAFT_ADMIN_PASSWORD"
ADMIN_NAME = "admin"


LEASE_ENV = "DIFFDRAFT_RUN_LEASE_S"
DEFAULT_LEASE_S = 15.0


def instance_id() -> str:
    """host:pid:random — unique for every app process, also across restarts with the same pid."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_seconds() -> float:
    """$DIFFDRAFT_RUN_LEASE_S (1 to 600) or 15: a run whose process died is taken as interrupted
    this long after its last renewal (the owner renews it every third of it)."""
    raw = os.environ.get(LEASE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        value = DEFAULT_LEASE_S
    return min(600.0, max(1.0, value))


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
    # drafts streaming at once (their steps share the batcher's forwards); more wait in Gradio's
    # queue, which shows each waiting person their place and an estimate
    active_drafts: int = 32
    queue_size: int = 256  # events waiting in the queue; beyond it a request is refused ("queue is full")


@dataclass
class Services:
    models: ModelVersions
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
    instance: str = field(default_factory=lambda: instance_id())  # this process, as run leases name it
    lease_s: float = field(default_factory=lambda: lease_seconds())  # how long a run's lease holds unrenewed
    batching: bool = False  # the steps of concurrent drafts share forwards (one batcher per model version)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    _batch_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def denoiser(self) -> Denoiser:
        """The denoiser the samplers of new drafts call (see the glossary)."""
        return self.denoiser_for(self.model_id)

    @property
    def batcher(self) -> Batcher | None:
        """The default version's batcher (None without batching)."""
        return self.denoiser if self.batching else None  # type: ignore[return-value]

    def denoiser_for(self, model_id: str) -> Denoiser:
        """The denoiser of a model version: its batcher (made on first use), or its model."""
        model = self.checkpoint_for(model_id).model
        if not self.batching:
            return model
        from engine.batching import Batcher

        with self._batch_lock:
            if model_id not in self.batchers:
                self.batchers[model_id] = Batcher(model)
            return self.batchers[model_id]

    @property
    def ckpt(self) -> Checkpoint:
        """The default version's checkpoint: what a new draft uses (it follows a promotion)."""
        return self.models.current()

    @property
    def diffusion(self) -> Diffusion:
        """The noise the default version was trained with."""
        return self.models.diffusion(self.models.default_id)

    def checkpoint_for(self, model_id: str) -> Checkpoint:
        """The checkpoint of a given version, e.g. the one a stored run recorded (KeyError if absent)."""
        return self.models.checkpoint(model_id)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.ckpt.tokenizer  # every version shares the start model's tokenizer (app.models)

    @property
    def model_id(self) -> str:
        return str(self.models.default_id)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

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
        for batcher in self.batchers.values():
            batcher.close()
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
    batching: bool = True,
) -> Services:
    """Load the model, open (and migrate) the database, copy the shipped templates in. With
    `batching` the steps of concurrent drafts share forwards (engine.batching; one worker thread,
    stopped by Services.close). login_delay_s: the login throttle's base delay
    (LoginPolicy.base_delay_s; 0 turns the waits off, the lock stays)."""
    import torch

    from app.models import ModelVersions
    from app.runs import RunRegistry
    from app.sessions import LoginSessions, SessionOwners
    from engine import checkpoint
    from storage import repository as repo
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
        models=ModelVersions(ckpt, mdir, data / "models"),
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
        batching=batching,
    )
    with svc.reader() as s:
        promoted = repo.get_setting(s, repo.DEFAULT_MODEL)
    if promoted and promoted != ckpt.model_id:
        try:
            svc.models.make_default(promoted)
        except (KeyError, checkpoint.CheckpointError) as exc:
            log.warning("the promoted model %s is not available (%s): drafting with %s", promoted, exc, ckpt.model_id)
    if sync_templates:
        load_templates(svc)
    clean_temp(svc)
    pause_interrupted(svc)
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


def pause_interrupted(svc: Services) -> list[int]:
    """Pause the runs left "running" by a process that died (their lease ran out), so that their
    owners can resume them; audited by the system. Returns the run ids."""
    from storage import repository as repo
    from storage.db import transaction

    with transaction(svc.factory) as s:
        paused = repo.pause_interrupted(s)
    if paused:
        log.info("paused %d interrupted run(s): %s", len(paused), ", ".join(map(str, paused)))
    return paused


def clean_temp(svc: Services) -> None:
    """Empty the data folder's temporary and download folders (files of a previous run)."""
    for folder in (svc.temp_dir, svc.downloads_dir):
        for p in folder.iterdir():
            try:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            except OSError as e:  # pragma: no cover - best effort
                log.warning("could not remove %s: %s", p, e)
