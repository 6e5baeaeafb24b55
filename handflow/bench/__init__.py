"""Benchmarks: `python -m handflow.bench.NAME` prints a table and writes JSON."""
