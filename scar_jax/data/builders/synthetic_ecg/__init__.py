"""TFDS builder folder: synthetic_ecg (the built-in corpus of scar_jax.data.synthetic)."""
