"""Speed benchmarks (not tests): `pytest bench/ --benchmark-only` and `python -m runners.throughput`."""
