"""``CHORUS_PROJECTIONS=external``: ``chorus serve`` projects nothing, ``chorus project`` does,
in a process of its own, and reads still wait for the caller's own writes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api
from tests.fixtures.processes import CHORUS, START_TIMEOUT, ChorusProcess, processes
from tests.fixtures.servers import new_database

READ_WAIT_S = 2.0


@contextmanager
def projector(workdir: Path, database_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``chorus project`` on the database, stopped (SIGTERM, then SIGKILL) whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = database_url
    with (workdir / "project.log").open("ab") as log:
        proc = subprocess.Popen(
            [CHORUS, "project"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_reads_wait_for_a_projector_in_its_own_process(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    env = {"CHORUS_PROJECTIONS": "external", "CHORUS_READ_WAIT_TIMEOUT_S": str(READ_WAIT_S)}
    with new_database(postgres_server) as url, processes() as started:
        server = ChorusProcess(tmp_path / "serve", url, env=env)
        started.append(server.start())
        server.wait_ready()
        api = Api(server.url)
        try:
            ann = api.signup("ann")
            ws = api.ok(api.post("/api/workspaces", ann, json={"name": "Acme"}), 201)
            # The server projects nothing: the read waits for ann's write, then gives up.
            waited = api.get("/api/workspaces", ann)
            assert waited.status_code == 503, waited.text

            with projector(tmp_path / "project", url) as proc:
                deadline = time.monotonic() + START_TIMEOUT
                while True:  # bounded: the projector starts, catches up and announces it
                    listed = api.get("/api/workspaces", ann)
                    if listed.status_code == 200:
                        break
                    assert proc.poll() is None, (tmp_path / "project" / "project.log").read_text()
                    assert time.monotonic() < deadline, listed.text
                assert [w["id"] for w in listed.json()["items"]] == [ws["id"]]

                # Once it runs, each write is readable as soon as it is projected.
                general = api.ok(
                    api.post(f"/api/workspaces/{ws['id']}/channels", ann, json={"name": "gen"}),
                    201,
                )
                sent = api.post(
                    f"/api/channels/{general['id']}/messages", ann, json={"text": "hello"}
                )
                api.ok(sent, 201)
                page = api.ok(api.get(f"/api/channels/{general['id']}/messages", ann))
                assert [m["text"] for m in page["items"]] == ["hello"]

                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
        finally:
            api.close()
