"""The cost of one projection step, compared between two versions of the runner in one
process, alternating step by step (two runs of the same code differ by up to 25 %, so only
a same-run comparison says anything; docs/BENCHMARKS.md, "Projection steps").

    python -m bench.projection_step OLD_RUNNER_PY [--steps 800]

OLD_RUNNER_PY is another version's ``projections/runner.py`` (e.g. from ``git show
main:projections/runner.py``); it is loaded beside this one, on the same read models: each
event is one message, applied by one version's step, the next by the other's."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.bootstrap import migrate
from api.contexts import CONTEXTS, all_projections
from application.chorus import Chorus
from application.commands import SendMessage
from bench.scenarios import prepare_chat
from domain.base import Cause
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.eventstore import eventsourcing_env
from infrastructure.passwords import PasswordHasher
from projections import runner as new_runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("old_runner", args.old)
    assert spec is not None and spec.loader is not None
    old_runner = importlib.util.module_from_spec(spec)
    sys.modules["old_runner"] = old_runner  # its dataclasses look themselves up there
    spec.loader.exec_module(old_runner)
    versions: dict[str, Any] = {"old": old_runner.apply_batch, "new": new_runner.apply_batch}
    with tempfile.TemporaryDirectory() as work:
        server = EmbeddedPostgres(Path(work) / "pg", settings={"fsync": "off"})
        url = server.start()
        try:
            migrate(url, all_projections())
            app = Chorus(
                eventsourcing_env(url),
                passwords=PasswordHasher(),
                handlers=CONTEXTS.handlers,
                snapshotting=CONTEXTS.snapshotting,
            )
            chat = prepare_chat(app)
            projections = all_projections()
            cpu: dict[str, list[float]] = {name: [] for name in versions}
            wall: dict[str, list[float]] = {name: [] for name in versions}
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                for _ in range(2):  # the set-up events
                    with conn.transaction(), conn.cursor() as cur:
                        new_runner.apply_batch(cur, projections, 1000)
                for i in range(args.steps):
                    name = "old" if i % 2 == 0 else "new"
                    app.execute(
                        SendMessage(channel_id=chat.channel_id, text=f"message {i}"),
                        Cause(actor_id=chat.user_id),
                    )
                    c0, w0 = time.thread_time(), time.perf_counter()
                    with conn.transaction(), conn.cursor() as cur:
                        count, _ = versions[name](cur, projections, 1000)
                    cpu[name].append(time.thread_time() - c0)
                    wall[name].append(time.perf_counter() - w0)
                    assert count == 1, count
            app.close()
        finally:
            server.stop()
    for name in versions:
        print(
            f"{name}: Python CPU per step mean {statistics.mean(cpu[name]) * 1e3:.3f} ms"
            f" median {statistics.median(cpu[name]) * 1e3:.3f} ms;"
            f" wall median {statistics.median(wall[name]) * 1e3:.3f} ms"
            f" ({len(cpu[name])} steps)"
        )


if __name__ == "__main__":
    main()
