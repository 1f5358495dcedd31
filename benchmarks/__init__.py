"""Benchmarks against PyTorch (run as modules: python -m benchmarks.compare); not part of the test suite."""
