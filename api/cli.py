"""The ``chorus`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from api.database import database
from infrastructure.settings import Settings, SettingsError

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
    with server.stop_signals():
        try:
            with database(settings) as url:
                # Generated once here so every worker signs and checks tokens with one key.
                os.environ["CHORUS_JWT_SECRET"] = settings.resolved_jwt_secret()
                options = {"host": args.host, "port": args.port, "log_level": args.log_level}
                if args.workers > 1:
                    os.environ["DATABASE_URL"] = url
                    cfg = server.config("api.asgi:app", settings, workers=args.workers, **options)
                else:
                    from api.app import create_app

                    cfg = server.config(create_app(settings, url), settings, **options)
                server.run(cfg)
        except server.Stopped as stopped:
            log.info("stopped by %s", stopped)
    return 0


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
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--public", action="store_true", help="allow binding a non-loopback address")
    s.add_argument("--log-level", default="info")
    s.set_defaults(run=serve)
    m = sub.add_parser("migrate", help="create or update the database schema, then exit")
    m.set_defaults(run=migrate)
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

    add_reactions_commands(sub)  # reactions status
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    result: int = args.run(args, settings)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
