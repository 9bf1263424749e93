"""`python -m app`: serve DiffDraft in the browser.

Builds the services (model, migrated database, templates), creates the first admin on an empty
database, builds the UI and launches a hardened Gradio server on 127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli import Parser, one_line


def build_parser() -> argparse.ArgumentParser:
    from app.services import ADMIN_PASSWORD_ENV

    p = Parser(prog="python -m app", description="DiffDraft: draft reports with a diffusion language model while "
                "people steer the draft, review it and audit every act.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860; 0 picks a free one)")
    p.add_argument("--data-dir", default=os.environ.get("DIFFDRAFT_DATA_DIR", "data"),
                   help="folder for the SQLite file, exports and temporary files (default $DIFFDRAFT_DATA_DIR or ./data)")
    p.add_argument("--db-url", default=None, help="database URL (sqlite:///FILE or postgresql+psycopg://USER@HOST/DB); "
                   "default $DATABASE_URL, else the SQLite file diffdraft.sqlite3 in --data-dir")
    p.add_argument("--model", default=None, help="model folder (default assets/model when it has a manifest.json, "
                   "else assets/tiny)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="seconds to wait between steps, to watch a fast model draft (default 0)")
    p.epilog = (f"On first start with no users an admin named 'admin' is created; its password is "
                f"${ADMIN_PASSWORD_ENV} if set, else a one-time password printed once, and it must be changed at "
                "first login. Add users in the Admin screen or with python -m storage.users.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"python -m app: error: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if not args.data_dir.strip():
        print("python -m app: error: --data-dir is empty: name a folder", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).expanduser().resolve()
    # files the app writes (the SQLite database, exports, temporary files) are for its own user only
    os.umask(0o077)
    try:
        if not data_dir.exists():  # a folder the app makes is its user's only; an existing one keeps its mode
            data_dir.mkdir(parents=True, mode=0o700)
        elif not data_dir.is_dir():
            raise NotADirectoryError(20, "it is not a folder")
    except OSError as e:
        print(f"python -m app: error: cannot use --data-dir {one_line(str(data_dir))!r}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    # before gradio is imported: no telemetry, no hub, temporary files in the data folder
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(data_dir / "tmp")
    no_proxy = os.environ.get("NO_PROXY", "")
    if "127.0.0.1" not in no_proxy:
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(x for x in ("127.0.0.1,localhost", no_proxy) if x)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from app.services import ADMIN_PASSWORD_ENV, build_services, default_model_dir, ensure_admin
    from engine.checkpoint import CheckpointError
    from storage.errors import StorageError

    model = Path(args.model) if args.model else default_model_dir()
    try:
        svc = build_services(model, db_url=args.db_url, data_dir=data_dir, threads=args.threads,
                             step_delay_s=max(0.0, args.step_delay))
    except CheckpointError as e:
        hint = " (build the tiny test model with: python -m engine.tiny --out assets/tiny)" \
            if model.name == "tiny" and not model.exists() else ""
        print(f"python -m app: error: {e}{hint}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"python -m app: error: {e}", file=sys.stderr)
        return 2
    try:
        one_time = ensure_admin(svc)
    except StorageError as e:
        svc.close()
        print(f"python -m app: error: {e}", file=sys.stderr)
        return 2
    finally:
        os.environ.pop(ADMIN_PASSWORD_ENV, None)  # not left for the rest of the process to read
    if one_time:
        print(f"\nFirst start: created user 'admin' with the one-time password\n\n    {one_time}\n\n"
              "Log in with it: the app then asks for a new password (the Password tab) before any other "
              "screen opens. It is not shown again.\n", flush=True)

    from app.leases import LeaseKeeper
    from app.ui import build_ui, launch_kwargs

    demo = build_ui(svc)
    demo.queue(default_concurrency_limit=2, max_size=svc.limits.queue_size)
    kwargs = launch_kwargs(svc, host=args.host, port=args.port or None)
    print(f"DiffDraft on http://{args.host}:{args.port or '(free port)'}  model {svc.model_id}  data {data_dir}",
          flush=True)
    keeper = LeaseKeeper(svc).start()
    try:
        demo.launch(**kwargs)
    finally:
        keeper.stop()
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
