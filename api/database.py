"""Which PostgreSQL a ``chorus`` command uses: ``DATABASE_URL``, or the private one in the
data directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings

log = logging.getLogger("chorus")


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """``DATABASE_URL``, or a private PostgreSQL in ``<data dir>/pg`` for as long as we run."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir / "pg")
    log.info("no DATABASE_URL: starting a private PostgreSQL in %s", server.data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextmanager
def shared_database(settings: Settings) -> Iterator[str]:
    """``database``, but when ``chorus serve`` already runs the private PostgreSQL, that one
    (a console command beside a running server)."""
    if settings.database_url is None:
        running = EmbeddedPostgres(settings.data_dir / "pg").url_of_running()
        if running is not None:
            yield running
            return
    with database(settings) as url:
        yield url


def unreachable(url: str) -> str | None:
    """Why the database at ``url`` cannot be reached, in one line (None: it can). A server
    that cannot reach its database should say so in a line, not in uvicorn's traceback of a
    failed start-up."""
    try:
        with psycopg.connect(url, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return one_line(exc, url)


def one_line(exc: BaseException, url: str) -> str:
    """A database error as one line naming where (never the password)."""
    where = urlsplit(url)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot reach the database at {where.hostname}:{where.port or 5432}: {first}"


class NoPasswords:
    """The password port of an application that a console command builds to append events
    with no password in them: nothing is hashed (argon2's pool is not started)."""

    def hash(self, password: str) -> str:
        raise NotImplementedError("this command hashes no password")

    def verify(self, stored_hash: str | None, password: str) -> bool:
        raise NotImplementedError("this command checks no password")
