"""Benchmarks for robustlearn (outside the package; not installed)."""
