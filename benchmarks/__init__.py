"""Benchmarks: ``python -m benchmarks`` prints one table, every figure measured in the same run."""
