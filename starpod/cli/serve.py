"""`starpod serve`: run the server exactly as the Procfile does (gunicorn -c gunicorn.conf.py wsgi:app)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import CliError, add_command, data_directory, require_initialized

# gunicorn.conf.py and wsgi.py sit at the root of the source tree (an editable install).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers, common) -> None:
    command = add_command(subparsers, "serve", common, run,
                          "Run the server (gunicorn, as the Procfile does).",
                          "Options override HOST, PORT and WEB_CONCURRENCY.")
    command.add_argument("--host", help="listen address (default: $HOST, else 0.0.0.0)")
    command.add_argument("--port", type=int, help="listen port (default: $PORT, else 3000)")
    command.add_argument("--workers", type=int, help="gevent workers (default: $WEB_CONCURRENCY, else 1)")


def run(args: argparse.Namespace) -> int:
    config = data_directory(args)
    require_initialized(config)
    missing = [name for name in ("gunicorn.conf.py", "wsgi.py") if not (SOURCE_ROOT / name).is_file()]
    if missing:
        raise CliError(f"{', '.join(missing)} not found in {SOURCE_ROOT}; "
                       "install Starpod from its source tree (pip install -e .)")
    os.environ["STARPOD_HOME"] = str(config.home)
    for name, value in (("HOST", args.host), ("PORT", args.port), ("WEB_CONCURRENCY", args.workers)):
        if value is not None:
            os.environ[name] = str(value)
    os.chdir(SOURCE_ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    os.execv(sys.executable, command)
