"""`python -m app`: flags, first-start admin, clear errors; nothing heavy at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import services

ROOT = Path(__file__).resolve().parent.parent


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--db-url", "--model", "--data-dir", "--threads", "--step-delay"):
        assert flag in out.stdout
    assert "one-time password" in out.stdout


def test_import_builds_nothing_heavy():
    code = "import sys, app.ui, app.draft, app.review, app.audit, app.admin, app.services; " \
           "print('torch.nn' in sys.modules and " \
           "any(type(v).__name__ == 'Checkpoint' for v in vars(app.services).values()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_model_folder_is_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "app", "--model", str(tmp_path / "nope"), "--data-dir",
                          str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "model folder not found" in out.stderr and "Traceback" not in out.stderr


def test_first_start_creates_an_admin_once(app_services, monkeypatch, tmp_path):
    from storage import repository as repo
    from storage.db import transaction

    # the fixture seeded users: nothing happens
    assert services.ensure_admin(app_services) is None
    fresh = services.build_services(app_services.model_dir, data_dir=tmp_path / "fresh", login_delay_s=0.0)
    try:
        monkeypatch.delenv(services.ADMIN_PASSWORD_ENV, raising=False)
        one_time = services.ensure_admin(fresh)
        assert one_time and len(one_time) >= 12
        with transaction(fresh.factory) as s:
            assert repo.authenticate(s, "admin", one_time).role == "admin"
        assert services.ensure_admin(fresh) is None
    finally:
        fresh.close()


def test_admin_password_from_the_environment(app_services, monkeypatch, tmp_path):
    from storage import repository as repo
    from storage.db import transaction

    monkeypatch.setenv(services.ADMIN_PASSWORD_ENV, "from the environment 1")
    fresh = services.build_services(app_services.model_dir, data_dir=tmp_path / "env", login_delay_s=0.0)
    try:
        assert services.ensure_admin(fresh) is None  # nothing printed: the password was given
        with transaction(fresh.factory) as s:
            assert repo.authenticate(s, "admin", "from the environment 1") is not None
    finally:
        fresh.close()


@pytest.mark.parametrize("path", ["shift_handover.txt"])
def test_template_names(path):
    assert services.template_name(Path(path)) == "Shift handover"


def test_admin_password_from_the_environment_must_keep_the_rules(app_services, monkeypatch, tmp_path):
    from storage import repository as repo
    from storage.errors import ValidationError

    monkeypatch.setenv(services.ADMIN_PASSWORD_ENV, "        ")
    fresh = services.build_services(app_services.model_dir, data_dir=tmp_path / "weak", login_delay_s=0.0)
    try:
        with pytest.raises(ValidationError, match=f"\\${services.ADMIN_PASSWORD_ENV} cannot be the admin's "
                                                  "password: the password is 8 characters long; at least 12"):
            services.ensure_admin(fresh)
        with fresh.reader() as s:
            assert repo.list_users(s) == []
    finally:
        fresh.close()


def test_weak_admin_password_at_start_is_one_clear_line(app_services, monkeypatch, tmp_path, capsys):
    from app.__main__ import main

    monkeypatch.setenv(services.ADMIN_PASSWORD_ENV, "admin")
    for name in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "GRADIO_TEMP_DIR", "NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "")  # main() sets these for the server; restored after the test
    assert main(["--model", str(app_services.model_dir), "--data-dir", str(tmp_path / "start")]) == 2
    err = capsys.readouterr().err
    assert f"error: ${services.ADMIN_PASSWORD_ENV} cannot be the admin's password" in err
    assert "Traceback" not in err and err.count("\n") == 1
    # the password is not left in the environment, and the data folder is for this user only
    import os
    import stat

    assert services.ADMIN_PASSWORD_ENV not in os.environ
    assert stat.S_IMODE((tmp_path / "start").stat().st_mode) == 0o700
    db = next((tmp_path / "start").glob("*.sqlite3"))
    assert stat.S_IMODE(db.stat().st_mode) & 0o077 == 0
    # a folder that exists (say the user's home) keeps its mode; what the app writes in it is private
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    monkeypatch.setenv(services.ADMIN_PASSWORD_ENV, "admin")  # refused again: main() stops before serving
    assert main(["--model", str(app_services.model_dir), "--data-dir", str(mine)]) == 2
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    assert stat.S_IMODE(next(mine.glob("*.sqlite3")).stat().st_mode) & 0o077 == 0
