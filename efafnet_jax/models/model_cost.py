"""Parameter and multiply-add counts of a model, read off its jaxpr."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np
from jax.extend import core as jax_core


def count_params(params) -> int:
    """Number of scalars in a params pytree (BatchNorm statistics live elsewhere)."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def _conv_macs(eqn) -> int:
    out_shape = eqn.outvars[0].aval.shape
    rhs_shape = eqn.invars[1].aval.shape
    dims = eqn.params["dimension_numbers"]
    out_spec, rhs_spec = dims.out_spec, dims.rhs_spec
    out_channels = out_shape[out_spec[1]]
    out_positions = math.prod(out_shape) // out_channels
    in_channels_per_group = rhs_shape[rhs_spec[1]]
    kernel_taps = math.prod(rhs_shape[d] for d in rhs_spec[2:])
    # A transposed conv runs as a conv over an input dilated with zeros; the
    # products with those inserted zeros are not real work.
    dilation = math.prod(eqn.params["lhs_dilation"])
    return out_positions * out_channels * kernel_taps * in_channels_per_group // dilation


def _dot_macs(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    contracted = math.prod(lhs_shape[d] for d in lhs_contract)
    return math.prod(eqn.outvars[0].aval.shape) * contracted


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif eqn.primitive.name == "dot_general":
            total += _dot_macs(eqn)
        for sub in jax_core.jaxprs_in_params(eqn.params):
            total += _jaxpr_macs(sub)
    return total


def count_macs(fn: Callable, *args) -> int:
    """Multiply-adds of convolutions and matmuls in `fn(*args)`.

    Elementwise work (BatchNorm, activations, pooling) is not counted, as is
    customary; transposed convolutions are counted without the zero insertions.
    Trace a model built with conv_impl="xla" to count the definition's convolutions.
    """
    return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)
