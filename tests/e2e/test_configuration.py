"""Configuration as an operator meets it (issue 22, point 5): every problem reported at once,
unknown ``CHORUS_*`` names pointed out, an unreachable database in one line, ``--version``,
``PORT``."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings
from tests.fixtures.processes import CHORUS, ChorusProcess, processes
from tests.fixtures.servers import new_database

pytestmark = pytest.mark.slow

# Free-form values: any text is a valid one.
FREE_FORM = {"CHORUS_CORS_ORIGINS", "CHORUS_DATA_DIR", "CHORUS_TRUSTED_PROXIES"}


def chorus(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [CHORUS, *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_reports_every_malformed_variable_in_one_run(tmp_path: Path) -> None:
    """The whole family: every variable a setting reads, set to nonsense at once."""
    known = Settings.known_variables()
    assert {"DATABASE_URL", "CHORUS_DB_POOL_SIZE", "PORT"} <= known
    env = {name: "nonsense%" for name in known}
    done = chorus("check-config", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    named = {name for name in known for line in errors if line.startswith(f"error: {name} ")}
    assert named == known - FREE_FORM, done.stdout
    assert len(errors) == len(named)  # one line each


def test_serve_refuses_a_malformed_configuration_naming_every_problem(tmp_path: Path) -> None:
    env = {"CHORUS_DB_POOL_SIZE": "abc", "CHORUS_GROUP_COMMIT": "maybe", "PORT": "70000"}
    done = chorus("serve", env=env, cwd=tmp_path)
    assert done.returncode == 2
    for name in env:
        assert f"configuration error: {name} " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_chorus_variable_is_pointed_out_with_its_likely_name(tmp_path: Path) -> None:
    env = {"CHORUS_RATE_LIMT_PER_SECOND": "5", "CHORUS_TEST_ANYTHING": "1"}
    done = chorus("check-config", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout  # a warning, not an error
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: CHORUS_RATE_LIMT_PER_SECOND is set but no setting reads it: did you mean "
        "CHORUS_RATE_LIMIT_PER_SECOND?"
    ]


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://chorus:hunter2-secret@127.0.0.1:1/chorus"
    for args in (("serve",), ("migrate",), ("check-config",)):
        done = chorus(*args, env={"DATABASE_URL": url}, cwd=tmp_path)
        assert done.returncode in (1, 2), (args, done.stderr)
        out = done.stdout + done.stderr
        said = [line for line in out.splitlines() if "cannot reach the database" in line]
        assert len(said) == 1 and "127.0.0.1:1" in said[0], (args, out)
        assert "Traceback" not in out and "hunter2" not in out, (args, out)


def test_version(tmp_path: Path) -> None:
    done = chorus("--version", env={}, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"chorus {version('chorus')}"


def test_serve_listens_on_port_when_no_port_option_is_given(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started:
        server = ChorusProcess(tmp_path / "serve", url, port_by_env=True)
        started.append(server.start())
        server.wait_ready()  # polls the port it put in PORT
