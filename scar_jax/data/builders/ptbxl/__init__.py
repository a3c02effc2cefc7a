"""TFDS builder folder: ptbxl."""
