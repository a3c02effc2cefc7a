"""Evaluation (METHOD §8): missingness protocols, zero-shot AUROC, CMRS, linear probes, reports."""
