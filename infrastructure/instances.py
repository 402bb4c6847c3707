"""Server instances and their heartbeats, so the sessions of a dead one can be closed."""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

INSTANCES_SQL = """
CREATE TABLE IF NOT EXISTS chorus_instances (
    instance_id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
"""


class Instances:
    """This process's row in ``chorus_instances``, and the rows of those that stopped
    beating."""

    def __init__(self, pool: ConnectionPool[Any], instance_id: str) -> None:
        self.pool = pool
        self.instance_id = instance_id

    def beat(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO chorus_instances (instance_id) VALUES (%s)"
                " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()",
                (self.instance_id,),
            )

    def silent_for(self, seconds: float) -> list[str]:
        """Instances (not this one) whose last heartbeat is older than ``seconds``."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT instance_id FROM chorus_instances WHERE instance_id <> %s"
                " AND heartbeat_at < now() - make_interval(secs => %s)",
                (self.instance_id, seconds),
            ).fetchall()
        return [str(row["instance_id"] if isinstance(row, dict) else row[0]) for row in rows]

    def forget(self, instance_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM chorus_instances WHERE instance_id = %s", (instance_id,))
