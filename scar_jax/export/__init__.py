"""Export of trained SCAR models to PyTorch (torch_modules: the torch source; to_torch: the map)."""
