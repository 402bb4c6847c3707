"""The container files (issue 22, point 6) checked without a container engine: the
Dockerfile by hadolint, compose.yaml against the Compose Specification's JSON schema
(vendored in tests/fixtures: no network), and the configuration compose.yaml gives Chorus by
``chorus check-config`` itself, against a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from api.cli import parser
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings
from tests.fixtures.servers import new_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
INSTANCES = ("chorus-1", "chorus-2")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so that it can be checked"
    return {str(k): str(v) for k, v in env.items()}


def _interpolated(value: str, given: dict[str, str]) -> str:
    """Compose's ``${NAME:?message}`` / ``${NAME}`` with the values an operator would give."""
    return re.sub(r"\$\{(\w+)(?::?[?-][^}]*)?\}", lambda m: given[m.group(1)], value)


def _stage_lines(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into stages."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        assert stages, f"an instruction before FROM: {line}"
        stages[-1].append(line)
    return stages


def test_the_dockerfile_passes_hadolint() -> None:
    lint = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == ""


def test_the_image_is_multi_stage_slim_unprivileged_and_checks_its_health() -> None:
    stages = _stage_lines((ROOT / "Dockerfile").read_text())
    assert len(stages) >= 2, "a build stage and a run stage"
    final = stages[-1]
    # Fully qualified: podman, unlike docker, may not resolve short names.
    assert re.match(r"FROM docker\.io/library/python:3\.11-slim\S* ", final[0] + " "), final[0]
    # The final stage takes the built virtualenv, and never installs (no compilers, no pip).
    assert any(line.startswith("COPY --from=") for line in final)
    assert not any(re.search(r"\bpip\b|apt-get", line) for line in final if "RUN" in line)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the final stage runs as a user of its own"
    assert users[-1].split(":")[0] not in ("root", "0")
    (check,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/health" in check
    entry = " ".join(line for line in final if line.startswith(("ENTRYPOINT", "CMD ")))
    assert '"chorus"' in entry and '"serve"' in entry
    # chorus serve refuses a non-loopback address without --public: the image says both.
    assert '"--host", "0.0.0.0", "--public"' in entry
    args = parser().parse_args(["serve", "--host", "0.0.0.0", "--public"])
    assert args.public and args.host == "0.0.0.0"


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything left out but what is named"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert kept == {"pyproject.toml", "README.md", *_packages()}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in _packages():
        assert f"COPY {package} " in dockerfile


def _packages() -> set[str]:
    found = re.search(r"include = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text())
    assert found is not None
    return {name.strip(' "*') for name in found.group(1).split(",")}


def test_compose_yaml_follows_the_compose_specification() -> None:
    check = subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_compose_stack_has_what_scaling_out_needs() -> None:
    services = _compose()["services"]
    assert re.fullmatch(
        r"docker\.io/library/postgres:15(\.\d+)*(-\S+)?", services["postgres"]["image"]
    )
    assert services["redis"]["image"].startswith("docker.io/library/redis:")
    for name in INSTANCES:
        env = _environment(services[name])
        assert services[name].get("command") is None  # the image's: chorus serve
        assert env["CHORUS_PROJECTIONS"] == "external"
        assert (
            env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
        )
        assert env["REDIS_URL"].startswith("redis://redis:")
    # Both instances must sign and check tokens with one secret: never left to each to make.
    secrets = {_environment(services[name])["CHORUS_JWT_SECRET"] for name in INSTANCES}
    assert len(secrets) == 1 and secrets.pop().startswith("${CHORUS_JWT_SECRET:?")
    assert services["projector"]["command"] == ["project"]
    caddy = services["caddy"]
    assert caddy["image"].startswith("docker.io/library/caddy:")
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    # The proxy's address is the one whose forwarded headers the instances believe.
    address = caddy["networks"]["chorus"]["ipv4_address"]
    for name in INSTANCES:
        assert _environment(services[name])["CHORUS_TRUSTED_PROXIES"] == address


def test_the_caddyfile_proxies_websockets_to_both_instances() -> None:
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    sockets = re.search(r"@sockets path (.+)", caddyfile)
    assert sockets is not None and set(sockets.group(1).split()) == {"/ws", "/yjs"}
    upstreams = re.findall(r"reverse_proxy (.+) \{", caddyfile)
    assert upstreams and all(
        set(u.split()) == {f"{name}:8000" for name in INSTANCES} for u in upstreams
    )
    assert re.search(r"@metrics path /metrics\s+handle @metrics \{\s+respond 404", caddyfile)


def test_every_variable_compose_gives_chorus_is_one_check_config_accepts(
    postgres_server: EmbeddedPostgres,
) -> None:
    services = _compose()["services"]
    known = Settings.known_variables()
    given = {
        "POSTGRES_PASSWORD": "p" * 24,
        "CHORUS_JWT_SECRET": "j" * 48,
        "CHORUS_OPS_TOKEN": "o" * 40,
    }
    for name in (*INSTANCES, "projector"):
        env = {k: _interpolated(v, given) for k, v in _environment(services[name]).items()}
        assert {k for k in env if k.startswith("CHORUS_")} <= known, name
        with new_database(postgres_server) as url:
            # The real check, on a database that answers in place of the stack's.
            env["DATABASE_URL"] = url
            checked = subprocess.run(
                [str(BIN / "chorus"), "check-config"],
                env={"PATH": os.environ["PATH"], **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "warning" not in checked.stdout, checked.stdout
        assert checked.stdout.startswith("configuration is valid"), checked.stdout
