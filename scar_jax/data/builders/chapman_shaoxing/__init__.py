"""TFDS builder folder: chapman_shaoxing."""
