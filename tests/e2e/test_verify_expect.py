"""Hostile input (issue #16, finding 15): `chorus verify --expect POSITION:HASH` holds only for
a position the log has. It used to pass for position 0 (or any position below 1) with any
hash, so a forged "published head" check proved nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infrastructure.chain import GENESIS, link
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import running_chorus
from tests.fixtures.cli import populate_audit, run

pytestmark = pytest.mark.security


def test_expect_refuses_positions_that_do_not_exist(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        populate_audit(chorus)
        url = chorus.database_url
        ok = run(url, "verify")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        # The first line (the next counts shredded events, issue 20).
        first = ok.stdout.splitlines()[0]
        head_position, head_hash = first.split("head position ")[1].split(" hash ")
        head = int(head_position)
        # Any hash, the genesis hash included, at positions no event has; and the hash of
        # position 1, claimed for position 0 (where the chain "starts").
        claims = [
            f"{position}:{digest}"
            for position in (0, -1, -(2**70), head + 1, 2**63)
            for digest in ("ab" * 32, GENESIS.hex(), head_hash.strip())
        ] + [f"0:{link(GENESIS, b'').hex()}"]
        # Each claim is its own `chorus verify` process, all reading the same log: run side
        # by side, as most of each one's second is the interpreter starting.
        with ThreadPoolExecutor(4) as pool:
            held = pool.submit(run, url, "verify", "--expect", f"{head}:{head_hash.strip()}")
            refused = list(pool.map(lambda claim: run(url, "verify", "--expect", claim), claims))
        assert held.result().returncode == 0
        for claim, result in zip(claims, refused, strict=True):
            assert result.returncode != 0, (claim, result.stdout)
            assert "ok:" not in result.stdout, claim
