"""The ``chorus`` command."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from importlib.metadata import version

import psycopg

from api.database import database, one_line, unreachable
from api.logs import configure as configure_logs
from infrastructure.metrics import MULTIPROCESS_DIR
from infrastructure.settings import Settings

log = logging.getLogger("chorus")


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from api import server

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public:
        print(
            f"refusing to bind {args.host}: pass --public to listen beyond this machine",
            file=sys.stderr,
        )
        return 2
    # From here any stop signal unwinds through ``database``: its PostgreSQL is stopped
    # (SIGTERM and SIGHUP would otherwise end the process and leave it running).
    port = settings.port if args.port is None else args.port
    with server.stop_signals():
        try:
            with database(settings) as url:
                problem = unreachable(url)
                if problem is not None:
                    print(f"chorus: {problem}", file=sys.stderr)
                    return 1
                # Generated once here so every worker signs and checks tokens with one key.
                os.environ["CHORUS_JWT_SECRET"] = settings.resolved_jwt_secret()
                options = {"host": args.host, "port": port, "log_level": args.log_level}
                if args.workers > 1:
                    os.environ["DATABASE_URL"] = url
                    share_metrics(settings)
                    cfg = server.config("api.asgi:app", settings, workers=args.workers, **options)
                else:
                    from api.app import create_app

                    cfg = server.config(create_app(settings, url), settings, **options)
                server.run(cfg)
        except server.Stopped as stopped:
            log.info("stopped by %s", stopped)
    return 0


def share_metrics(settings: Settings) -> None:
    """Workers write their metrics to one fresh directory, so that a scrape of any of them
    shows every worker's (infrastructure/metrics.py). Set before they start: the client
    chooses how it keeps values when it is first imported."""
    where = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, mode=0o700)
    os.environ.setdefault(MULTIPROCESS_DIR, str(where))


def check_config(_: argparse.Namespace, settings: Settings) -> int:
    """Every problem with the configuration at once (``main`` has read it): malformed values,
    unknown ``CHORUS_*`` names, a database that cannot be reached. 0 when it would start."""
    problems, unknown = Settings.check_env()[1:]
    for problem in problems:
        print(f"error: {problem}")
    for name in unknown:
        print(f"warning: {unknown_variable(name)}")
    if not problems and settings.database_url is not None:
        reason = unreachable(settings.database_url)
        if reason is not None:
            problems.append(reason)
            print(f"error: {reason}")
    if not problems:
        where = (
            "DATABASE_URL" if settings.database_url else "a private PostgreSQL (no DATABASE_URL)"
        )
        print(f"configuration is valid; database: {where}")
    return 2 if problems else 0


def unknown_variable(name: str) -> str:
    known = sorted(Settings.known_variables())
    close = difflib.get_close_matches(name, known, n=1)
    hint = f": did you mean {close[0]}?" if close else " (see README, Configuration)"
    return f"{name} is set but no setting reads it{hint}"


def migrate(_: argparse.Namespace, settings: Settings) -> int:
    from api.bootstrap import migrate as run_migrations
    from api.contexts import all_projections

    with database(settings) as url:
        run_migrations(url, all_projections())
    print("schema is up to date")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chorus", description="Chorus: event-sourced collaboration backend"
    )
    p.add_argument("--version", action="version", version=f"chorus {version('chorus')}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default: PORT, else 8000")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--public", action="store_true", help="allow binding a non-loopback address")
    s.add_argument("--log-level", default="info")
    s.set_defaults(run=serve)
    m = sub.add_parser("migrate", help="create or update the database schema, then exit")
    m.set_defaults(run=migrate)
    c = sub.add_parser("check-config", help="report every configuration problem at once, then exit")
    c.set_defaults(run=check_config)
    from api.log_cli import add_commands

    add_commands(sub)  # events, verify
    from api.analytics_cli import add_commands as add_analytics_commands

    add_analytics_commands(sub)  # analytics-role, export
    from api.replay_cli import add_commands as add_replay_commands

    add_replay_commands(sub)  # replay
    from api.project_cli import add_commands as add_project_commands

    add_project_commands(sub)  # project
    from api.instance_cli import add_commands as add_instance_commands

    add_instance_commands(sub)  # grant, revoke

    from api.projections_cli import add_commands as add_projections_commands

    add_projections_commands(sub)  # projections status, projections skip
    from api.reactions_cli import add_commands as add_reactions_commands

    add_reactions_commands(sub)  # reactions status, reactions skip
    from api.user_cli import add_commands as add_user_commands

    add_user_commands(sub)  # issue-password-reset, reactivate-user

    from api.erasure_cli import add_commands as add_erasure_commands

    add_erasure_commands(sub)  # erase-user, rotate-master-key (issue 20)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings, problems, unknown = Settings.check_env()
    configure_logs(settings.log_format, getattr(args, "log_level", "info"))
    if args.run is not check_config:
        for name in unknown:
            log.warning("%s", unknown_variable(name))
        if problems:
            for problem in problems:
                print(f"configuration error: {problem}", file=sys.stderr)
            return 2
    try:
        result: int = args.run(args, settings)
    except psycopg.OperationalError as exc:
        # A database that went away mid-command: one line, not a traceback.
        url = settings.database_url or "postgresql://localhost"
        print(f"chorus: {one_line(exc, url)}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
