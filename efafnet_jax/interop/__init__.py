"""PyTorch interop: a reference network, weight conversion and a numeric compare.

Only this package and the `inference.to_torch` command import torch (install the `torch`
extra); nothing is imported here eagerly, so `import efafnet_jax.interop` works without it.
"""
