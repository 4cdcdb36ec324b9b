"""Micro-benchmarks: run as modules (``python -m benchmarks.bench_protocol``), never from tests.

Figures are reported in ``docs/benchmarks.md``; no test asserts a timing.
"""
