"""``python -m bench.server``: ``chorus serve`` with the projection runner switched off.

A diagnostic for the benchmarks only, never a way to run Chorus: without projections the read
models stop moving, so reads that wait for the caller's last write time out. It shows how much
of an HTTP write's cost is the in-process projection work that follows every commit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from api.app import create_app
from api.bootstrap import build_services
from api.contexts import CONTEXTS
from infrastructure.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if settings.database_url is None:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    services = build_services(
        settings, settings.database_url, catalogue=CONTEXTS, run_projections=False
    )
    app = create_app(settings, settings.database_url, services=services)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
