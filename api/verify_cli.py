"""``chorus verify --read-models``: the read models checked against the verified log (see
projections/shadow_verify.py), printed for people or as JSON."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import msgspec
from tqdm import tqdm

from api.contexts import all_projections
from infrastructure.chain import ChainReport
from projections.replay import by_names
from projections.shadow_verify import Busy, ReadModelReport, TableReport, verify_read_models

# Exit statuses: 0 everything matches, 1 a divergence (or the chain is broken), 2 the check
# could not run (usage, another check of the read models running).
BUSY = 2


class _Stop(SystemExit):
    """SIGTERM: unwinds like Ctrl-C, so the shadow schema is dropped. A SystemExit, as
    psycopg then cancels the statement in progress (it may wait on a lock for long) rather
    than leave its connection busy."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop


def chain_json(report: ChainReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "count": report.count,
        "head_position": report.head_position,
        "head_hash": report.head_hash.hex(),
        "bad_position": report.bad_position,
        "problem": report.problem,
    }


def check_read_models(
    args: argparse.Namespace, url: str, chain: ChainReport
) -> tuple[int, ReadModelReport | None]:
    """After a chain check that passed: the exit status and the report (None if the check
    could not run)."""
    try:
        chosen = by_names(all_projections(), args.projection)
    except ValueError as exc:
        print(f"chorus verify: {exc}", file=sys.stderr)
        return 2, None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Drawn on a terminal only, as the chain check's: it stays out of pipes and logs.
    shown = sys.stderr.isatty() and not args.no_progress
    bar = tqdm(total=chain.head_position, unit="ev", desc="rebuild", disable=not shown)
    try:
        report = verify_read_models(
            url, chosen, verified=(chain.head_position, chain.head_hash), progress=bar.update
        )
    except Busy as exc:
        print(f"chorus verify: {exc}; try again when it ends", file=sys.stderr)
        return BUSY, None
    except (KeyboardInterrupt, _Stop):
        print("chorus verify: interrupted (the shadow schema was dropped)", file=sys.stderr)
        return 130, None
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    if not args.json:
        _print(report)
    return (0 if report.ok else 1), report


def print_json(chain: ChainReport, read_models: ReadModelReport | None) -> None:
    out: dict[str, Any] = {"chain": chain_json(chain)}
    if read_models is not None:
        out["read_models"] = read_models
    sys.stdout.buffer.write(msgspec.json.encode(out) + b"\n")
    sys.stdout.flush()


def _print(report: ReadModelReport) -> None:
    at = ", ".join(f"{name} {position}" for name, position in report.positions.items())
    if report.ok:
        print(
            f"read models ok: {len(report.tables)} tables match their rebuild from the log"
            f" (positions: {at})"
        )
        return
    for problem in report.problems:
        print(f"read models: not compared: {problem}")
    diverged = [t for t in report.tables if t.diverged]
    for table in diverged:
        _print_table(table)
    rows = sum(t.missing + t.extra + t.changed for t in diverged)
    print(
        f"read models FAILED: {rows} rows in {len(diverged)} tables differ from their rebuild"
        f" from the log (positions: {at})"
    )


def _print_table(table: TableReport) -> None:
    print(
        f"{table.table} ({table.projection}): {table.changed} changed, {table.missing} missing,"
        f" {table.extra} extra (live {table.live_rows} rows, rebuilt {table.rebuilt_rows})"
    )
    for row in table.rows:
        key = ", ".join(f"{k}={v}" for k, v in row.key.items())
        if row.kind == "changed":
            for column in row.columns:
                print(
                    f"  changed {key}: {column}: live {row.live.get(column)!r},"
                    f" from the log {row.rebuilt.get(column)!r}"
                )
        elif row.kind == "missing":
            print(f"  missing {key} (the log has it, the live table does not)")
        else:
            print(f"  extra {key} (in the live table only)")
    shown = len(table.rows)
    total = table.changed + table.missing + table.extra
    if total > shown:
        print(f"  … and {total - shown} more")
    if not total and table.live_rows != table.rebuilt_rows:
        print("  the row counts differ with no differing key: duplicate keys in the live table")


def add_arguments(v: argparse.ArgumentParser) -> None:
    v.add_argument(
        "--read-models",
        action="store_true",
        help="then rebuild the read models from the verified log into a shadow schema and"
        " report every row of the live tables that differs (exit 1)",
    )
    v.add_argument(
        "--projection",
        action="append",
        metavar="NAME",
        help="with --read-models: only this read model (repeatable)",
    )
    v.add_argument("--json", action="store_true", help="print one JSON object")
