"""Benchmarks, one module per subject: ``python -m harness.bench.<module> --help``."""
