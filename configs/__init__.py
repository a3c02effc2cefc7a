"""Experiment configs: `configs/<family>.py` with `get_config(arg)` (and `sweep(add)`)."""
