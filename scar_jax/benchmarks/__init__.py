"""Benchmark scripts (run as modules; not tests): python -m scar_jax.benchmarks.<name>."""
