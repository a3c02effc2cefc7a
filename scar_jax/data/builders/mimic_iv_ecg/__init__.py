"""TFDS builder folder: mimic_iv_ecg."""
