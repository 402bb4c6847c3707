"""Unread counts: one user's badges in every channel they read (1,000 of them), from the
read model.

The read-model tables (created by the projections' own DDL) are filled in SQL for one
reader: ``workspaces`` workspaces of ``channels / workspaces`` channels each (one in ten
private, the reader a member), ``messages`` messages per channel from twenty other authors
and the reader (one in twenty messages the reader's own, one in fifty deleted, one in thirty
mentioning the reader), and a read marker per channel anywhere from nothing read to all of
it. Other users' rows sit beside them (each channel's other readers' markers). Then N
threads, each with its own connection, repeat the query the workspace list and the bench
target use (``projections/read_state.all_channel_counts``: every readable channel's unread
count, mention count and marker) in a closed loop; p50 and p99 of one answer are the figure
(target p99 ≤ 20 ms at 1,000 channels). The answer's sums are checked against a scan.

``python -m bench.unread`` runs it alone on a private PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.contexts import all_projections
from bench import scenarios
from bench.harness import CpuProbe, LoadResult, Worker, WorkerFactory, run_load
from infrastructure.embedded_postgres import EmbeddedPostgres
from projections.queries import run
from projections.read_state import all_channel_counts
from projections.runner import create_tables

DATABASE = "bench_unread"
FULL = {"channels": 1000, "workspaces": 10, "messages": 200, "others": 20}
QUICK = {"channels": 1000, "workspaces": 10, "messages": 30, "others": 20}
TARGET_P99_MS = 20.0

# Everything for one reader, in set-based SQL (%(...)s: the sizes and the reader's id).
_FILL = """
INSERT INTO rm_users (user_id, username, display_name, registered_at)
    SELECT u, 'u' || replace(u::text, '-', ''), 'someone', now()
    FROM unnest(%(users)s::uuid[]) AS u;
CREATE TEMP TABLE bench_ws AS
    SELECT gen_random_uuid() AS workspace_id, w FROM generate_series(1, %(workspaces)s) w;
INSERT INTO rm_workspaces (workspace_id, name, visibility, has_password, owner_id,
    member_count, created_at)
    SELECT workspace_id, 'w' || w, 'private', false, %(reader)s, 1, now() FROM bench_ws;
INSERT INTO rm_workspace_roles (workspace_id, name, permissions, builtin)
    SELECT workspace_id, 'member', ARRAY['view_channels', 'send_messages'], true FROM bench_ws;
INSERT INTO rm_workspace_members (workspace_id, user_id, roles, joined_at)
    SELECT workspace_id, u, ARRAY['member'], now() FROM bench_ws,
    unnest(%(users)s::uuid[]) AS u;
CREATE TEMP TABLE bench_ch AS
    SELECT gen_random_uuid() AS channel_id, ws.workspace_id, c, c %% 10 = 0 AS private
    FROM generate_series(0, %(channels)s - 1) c
    JOIN bench_ws ws ON ws.w = c %% %(workspaces)s + 1;
INSERT INTO rm_channels (channel_id, workspace_id, kind, name, private, topic, created_at)
    SELECT channel_id, workspace_id, 'channel', 'c' || c, private, '', now() FROM bench_ch;
INSERT INTO rm_channel_members (channel_id, user_id)
    SELECT channel_id, u FROM bench_ch, unnest(%(users)s::uuid[]) AS u WHERE private;
CREATE TEMP TABLE bench_msg AS
    SELECT ch.channel_id, ch.workspace_id, ch.c * %(messages)s + i AS seq, i AS n,
    CASE WHEN i %% 20 = 0 THEN %(reader)s::uuid
         ELSE (%(users)s::uuid[])[2 + (i %% %(others)s)] END AS author_id,
    i %% 50 = 7 AS deleted, i %% 30 = 11 AS mentions_reader
    FROM bench_ch ch, generate_series(1, %(messages)s) i;
INSERT INTO rm_messages (message_id, channel_id, workspace_id, author_id, text, mentions,
    reply_to, reply_count, created_at, deleted, seq, version, channel_seq)
    SELECT gen_random_uuid(), channel_id, workspace_id, author_id,
    CASE WHEN deleted THEN '' ELSE 'a message of about the usual length, give or take' END,
    CASE WHEN mentions_reader AND NOT deleted THEN ARRAY[%(reader)s::uuid] ELSE '{}' END,
    NULL, 0, now(), deleted, seq, 1, n FROM bench_msg;
INSERT INTO rm_channel_heads (channel_id, messages, last_seq, last_message_id, last_at,
    last_deleted_seq)
    SELECT DISTINCT ON (channel_id) channel_id, channel_seq, seq, message_id, created_at,
    (SELECT coalesce(max(d.seq), 0) FROM rm_messages d WHERE d.channel_id = m.channel_id
     AND d.deleted)
    FROM rm_messages m ORDER BY channel_id, seq DESC;
INSERT INTO rm_author_counts (author_id, channel_id, messages)
    SELECT author_id, channel_id, count(*) FROM rm_messages GROUP BY 1, 2;
INSERT INTO rm_mentions (user_id, channel_id, seq, message_id)
    SELECT %(reader)s, channel_id, seq, message_id FROM rm_messages
    WHERE %(reader)s = ANY(mentions) AND author_id <> %(reader)s;
INSERT INTO rm_mention_heads (user_id, channel_id, last_seq)
    SELECT user_id, channel_id, max(seq) FROM rm_mentions GROUP BY 1, 2;
-- Every user's marker in every channel, anywhere from nothing read to everything.
INSERT INTO rm_read_markers (user_id, channel_id, position, message_id, channel_seq,
    own_messages, read_at)
    SELECT k.u, m.channel_id, m.seq, m.message_id, m.channel_seq,
    (SELECT count(*) FROM rm_messages o WHERE o.channel_id = m.channel_id
     AND o.author_id = k.u AND o.seq <= m.seq), now()
    FROM (SELECT ch.channel_id, u, 1 + floor(random() * %(messages)s)::int AS n
          FROM bench_ch ch CROSS JOIN unnest(%(users)s::uuid[]) AS u) k
    JOIN rm_messages m ON m.channel_id = k.channel_id AND m.channel_seq = k.n;
"""

# The same counts by brute force: what the read model's answer must sum to.
_SCAN = """
SELECT count(*) FILTER (WHERE m.author_id <> %(reader)s AND NOT m.deleted) AS unread,
       count(*) FILTER (WHERE %(reader)s = ANY(m.mentions) AND m.author_id <> %(reader)s)
         AS mentions
FROM rm_messages m
LEFT JOIN rm_read_markers r ON r.user_id = %(reader)s AND r.channel_id = m.channel_id
WHERE m.seq > coalesce(r.position, 0)
"""


def fill(url: str, sizes: dict[str, int]) -> str:
    """The read models of one reader (returned) and ``others`` other users."""
    reader = str(uuid.uuid4())
    users = [reader, *(str(uuid.uuid4()) for _ in range(sizes["others"]))]
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            create_tables(cur, all_projections())
        # Client-side binding: one round trip for the whole script.
        with conn.transaction(), psycopg.ClientCursor(conn) as script:
            script.execute(_FILL, {**sizes, "reader": reader, "users": users})
        # As autovacuum leaves tables in a steady state: statistics, and a visibility map that
        # lets index-only scans skip the heap.
        conn.execute("VACUUM ANALYZE")
    return reader


def check(url: str, reader: str) -> dict[str, int]:
    """The read model's totals, which must equal a scan's."""
    with psycopg.connect(url, row_factory=dict_row) as conn, conn.cursor() as cur:
        rows = run(cur, all_channel_counts(reader))
        cur.execute(_SCAN, {"reader": reader})
        scan = cur.fetchone() or {}
    totals = {
        "channels": len(rows),
        "unread": sum(r["unread_count"] for r in rows),
        "mentions": sum(r["mention_count"] for r in rows),
    }
    if (totals["unread"], totals["mentions"]) != (scan.get("unread"), scan.get("mentions")):
        raise RuntimeError(f"read model {totals} differs from a scan {scan}")
    return totals


def factory(url: str, reader: str) -> WorkerFactory:
    def make(_: int) -> Worker:
        conn = psycopg.connect(url, row_factory=dict_row, autocommit=True)
        cur = conn.cursor()

        def op() -> None:
            run(cur, all_channel_counts(reader))

        return op, conn.close

    return make


def run_figure(
    pg: EmbeddedPostgres,
    admin_url: str,
    *,
    quick: bool,
    levels: list[int],
    warmup_s: float,
    duration_s: float,
    probes: list[CpuProbe],
) -> dict[str, Any]:
    """The figure at each concurrency level: returns it as JSON (and prints a line each)."""
    sizes = QUICK if quick else FULL
    scenarios.create_database(admin_url, DATABASE)
    url = pg.url_for(DATABASE)
    reader = fill(url, sizes)
    totals = check(url, reader)
    results: list[LoadResult] = []
    for n in levels:
        result = run_load(
            "unread_counts",
            factory(url, reader),
            concurrency=n,
            warmup_s=warmup_s,
            duration_s=duration_s,
            probes=probes,
        )
        results.append(result)
        print(line(result, totals), flush=True)
    return {
        "sizes": sizes,
        "totals": totals,
        "target_p99_ms": TARGET_P99_MS,
        "results": [r.to_json() for r in results],
    }


def line(result: LoadResult, totals: dict[str, int]) -> str:
    p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
    text = (
        f"  unread counts of {totals['channels']} channels ({totals['unread']} unread,"
        f" {totals['mentions']} mentions) x{result.concurrency}: {result.rate:.0f}/s"
        f"  p50 {p50 or 0:.2f} ms  p99 {p99 or 0:.2f} ms (target ≤ {TARGET_P99_MS:g})"
    )
    if result.errors:
        text += f"  ERRORS {result.errors}: {result.first_error}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.unread", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer messages, shorter windows")
    p.add_argument("--concurrency", default="1", help="comma-separated client counts")
    p.add_argument("--output", type=Path, help="where to write the figure as JSON")
    args = p.parse_args(argv)
    levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-unread-"))
    work.chmod(0o711)  # the unprivileged user running PostgreSQL (when we are root)
    pg = EmbeddedPostgres(work / "pg")
    try:
        admin_url = pg.start()
        figure = run_figure(
            pg,
            admin_url,
            quick=args.quick,
            levels=levels,
            warmup_s=0.3 if args.quick else 2.0,
            duration_s=2.0 if args.quick else 8.0,
            probes=[],
        )
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.output is not None:
        args.output.write_text(json.dumps(figure, indent=2) + "\n")
    return 1 if any(r["errors"] for r in figure["results"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
