"""Choices that depend on the machine, made once by the entry points.

The library below never asks which backend it runs on: train.py, eval.py, predict,
export and the benchmarks call these and pass the answers down in the config.
"""

from __future__ import annotations

import jax
import ml_collections


def resolve_conv_impl(requested: str, backend: str) -> str:
    """model.conv_impl "auto" -> "cpu_gemm" on XLA:CPU (any device count), else "xla".

    The CPU forms pay off on XLA:CPU only (cuDNN and the TPU compiler run
    transposed convolutions natively); they are exact under batch sharding too
    (tests/test_kernels.py). See models/kernels.py and benchmarks/RESULTS.md.
    """
    if requested != "auto":
        return requested
    return "cpu_gemm" if backend == "cpu" else "xla"


def resolve_compute_dtype(requested: str, backend: str) -> str:
    """train.compute_dtype "auto" -> bfloat16 on GPU/TPU, float32 on CPU (XLA:CPU computes
    bf16 convolutions in f32 anyway, at the cost of the conversions)."""
    if requested != "auto":
        return requested
    return "float32" if backend == "cpu" else "bfloat16"


def for_this_machine(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the machine-dependent "auto" settings resolved here."""
    config = config.copy_and_resolve_references()
    backend = jax.default_backend()
    config.model.conv_impl = resolve_conv_impl(config.model.conv_impl, backend)
    if "train" in config:
        config.train.compute_dtype = resolve_compute_dtype(config.train.compute_dtype, backend)
    return config
