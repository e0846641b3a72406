"""Inference on new inputs: predict on images, export for serving, weights out to PyTorch."""
