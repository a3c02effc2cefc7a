"""Benchmarks (run as modules; not tests): `python -m scar_jax.benchmarks` runs the suite of
issue #9 (suite.py, torch_step.py); `python -m scar_jax.benchmarks.pipeline_io` the reader
comparison alone."""
