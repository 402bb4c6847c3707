"""Throughput and latency benchmarks of Chorus's write path, each beside its baseline.

Run by hand (``python -m bench`` or ``make bench``), never in CI: see docs/BENCHMARKS.md.
"""
