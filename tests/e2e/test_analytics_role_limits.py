"""The analytics role is an attack surface too (issue 16, finding 14): it holds few
connections, and it does not see other tables' statistics (row counts of credentials,
tokens, events...)."""

from __future__ import annotations

from contextlib import ExitStack
from urllib.parse import urlparse

import psycopg
import pytest

from api.analytics_cli import DEFAULT_CONNECTION_LIMIT
from projections.analytics_access import STATISTICS_VIEWS
from tests.fixtures.analytics import chorus_cli
from tests.fixtures.chorus import Running

SECRET_TABLES = ("chorus_credentials", "chorus_refresh_tokens", "chorus_events")


def _as(chorus: Running, name: str, password: str) -> str:
    url = urlparse(chorus.database_url)
    return f"postgresql://{name}:{password.replace(' ', '%20')}@{url.hostname}:{url.port}{url.path}"


def test_the_analytics_role_holds_few_connections(
    chorus: Running, analyst: tuple[str, str]
) -> None:
    name, password = analyst
    made = chorus_cli(chorus.database_url, "analytics-role", name, password)
    assert made.returncode == 0, made.stderr
    with psycopg.connect(chorus.database_url) as conn:
        limit = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (name,))
        assert limit.fetchone() == (DEFAULT_CONNECTION_LIMIT,)
    again = chorus_cli(
        chorus.database_url, "analytics-role", name, password, "--connection-limit", "2"
    )
    assert again.returncode == 0, again.stderr
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(psycopg.connect(_as(chorus, name, password)))
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            psycopg.connect(_as(chorus, name, password))
        # The servers' own role is not limited by it: it still connects.
        with psycopg.connect(chorus.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    for bad in ("0", "-1", "100000"):
        refused = chorus_cli(
            chorus.database_url, "analytics-role", name, password, "--connection-limit", bad
        )
        assert refused.returncode == 2


def test_the_analytics_role_sees_no_table_statistics(
    chorus: Running, analyst: tuple[str, str]
) -> None:
    chorus.api.signup("counted")
    name, password = analyst
    made = chorus_cli(chorus.database_url, "analytics-role", name, password)
    assert made.returncode == 0, made.stderr
    assert "warning" not in made.stderr
    with psycopg.connect(_as(chorus, name, password), autocommit=True) as conn:
        for view in STATISTICS_VIEWS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM pg_catalog.{view}")
        for table in SECRET_TABLES:
            for function in (
                "pg_stat_get_live_tuples",
                "pg_stat_get_tuples_inserted",
                "pg_stat_get_numscans",
                "pg_stat_get_blocks_fetched",
                "pg_stat_get_xact_tuples_inserted",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT {function}(%s::regclass)", (table,))
        # What it is for still works.
        assert conn.execute("SELECT count(*) FROM analytics.messages").fetchone() is not None
    # Those whose job it is still see them: the servers' own role, and monitoring roles.
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM pg_stat_user_tables").fetchone()
        assert rows is not None and rows[0] > 0
        granted = conn.execute(
            "SELECT has_table_privilege('pg_read_all_stats', 'pg_stat_user_tables', 'SELECT')"
        ).fetchone()
        assert granted == (True,)
