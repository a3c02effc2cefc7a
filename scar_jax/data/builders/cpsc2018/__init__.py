"""TFDS builder folder: cpsc2018."""
