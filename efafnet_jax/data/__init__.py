"""Datasets: keypoint specs, readers, SimpleBaseline/HRNet transforms and targets."""
