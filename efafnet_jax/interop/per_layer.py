"""Per-layer forward divergence between the flax model and the PyTorch reference.

Both networks run once in eval mode on the same input, and every PyTorch leaf
module that holds parameters (Conv2d, ConvTranspose2d, BatchNorm2d, Linear) is
compared with its flax twin's output. Twins are paired through the converter's
key mapping (`convert.torch_key`), so each layer carries its state_dict name.
A layer's input comes from the layer before it in the same network, so an error
propagates downstream: the first layer over the tolerance, in the order PyTorch
runs the layers, is where the two networks start to disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import torch
from flax import traverse_util

from efafnet_jax.interop.convert import torch_key

# Correct layers agree to ~1e-14 in float64 and ~1e-6..2e-5 in float32 (tiny widths). A
# randomly initialised R50 amplifies float32 rounding towards its head (docs/numerics.md,
# "Reading the float32 figures"), where a correct layer can pass 1e-4: rerun in float64 to tell.
DEFAULT_LAYER_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def default_layer_tolerance(dtype: str) -> float:
    """The tolerance used when none is given: 1e-10 for float64, 1e-4 for float32."""
    return DEFAULT_LAYER_TOLERANCE[dtype]


def _torch_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Leaf modules with parameters of their own, by state_dict name."""
    return {
        name: module
        for name, module in model.named_modules()
        if next(module.children(), None) is None
        and next(module.parameters(recurse=False), None) is not None
    }


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).double().numpy()


def _torch_outputs(model: torch.nn.Module, inputs: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Every parameterised leaf's outputs (one per call, NHWC), in the order they ran."""
    outputs: dict[str, list[np.ndarray]] = {}

    def recorder(name: str):
        def hook(module, args, output):
            # Cloned at once: the deconvolution head's ReLU(inplace=True) overwrites it next.
            outputs.setdefault(name, []).append(_nhwc(output.detach().clone()))

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in _torch_layers(model).items()]
    was_training = model.training
    dtype = next(model.parameters()).dtype
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(inputs).permute(0, 3, 1, 2).to(dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return outputs


def _owns_params(module: nn.Module, method: str) -> bool:
    """capture_intermediates filter: __call__ of modules with parameters of their own."""
    params = module.variables.get("params", {})
    return method == "__call__" and any(not isinstance(v, Mapping) for v in params.values())


def _flax_outputs(
    model: nn.Module, variables: Mapping, inputs: np.ndarray
) -> dict[str, list[np.ndarray]]:
    """Outputs of each flax module with parameters, keyed by its torch module name."""
    _, state = model.apply(
        variables,
        jnp.asarray(inputs, model.dtype),
        train=False,
        capture_intermediates=_owns_params,
        mutable=["intermediates"],
    )
    captured = traverse_util.flatten_dict(state["intermediates"])
    outputs = {}
    for path in traverse_util.flatten_dict(variables["params"]):
        # A module's torch name is any of its parameters' keys less '.weight' / '.bias'.
        name = torch_key(("params", *path)).rsplit(".", 1)[0]
        # A module whose output was not captured is left out here and named by the caller.
        calls = captured.get((*path[:-1], "__call__"))
        if calls is not None:
            outputs[name] = [np.asarray(c, np.float64) for c in calls]
    return outputs


def _check_pairing(torch_model: torch.nn.Module, ours: dict, reference: dict) -> None:
    """Every parameterised torch leaf ran and has a flax twin of the same calls and shapes."""
    layers = set(_torch_layers(torch_model))
    problems = []
    if layers - set(reference):
        problems.append(f"torch layers that did not run: {sorted(layers - set(reference))}")
    if layers - set(ours):
        problems.append(f"torch layers with no flax output: {sorted(layers - set(ours))}")
    if set(ours) - layers:
        problems.append(f"flax outputs with no torch layer: {sorted(set(ours) - layers)}")
    for name in sorted(layers & set(ours) & set(reference)):
        shapes = [[o.shape for o in side[name]] for side in (ours, reference)]
        if shapes[0] != shapes[1]:
            problems.append(f"{name}: flax output shapes {shapes[0]} != torch {shapes[1]}")
    if problems:
        raise ValueError("per-layer comparison cannot pair the layers: " + "; ".join(problems))


def per_layer_errors(
    torch_model: torch.nn.Module,
    flax_model: nn.Module,
    variables: Mapping,
    inputs: np.ndarray,
) -> dict[str, tuple[float, float]]:
    """{torch module name: (max abs error, relative error)} in the order PyTorch runs them.

    Both models run in eval mode (the torch model's mode is restored) on `inputs`, a
    normalised NHWC batch, each in its own dtype. Relative error is `compare`'s,
    max|jax - torch| / max(max|torch|, 1e-3 G), with G the layer's own max|torch|, so
    it is max|jax - torch| / max|torch| of that layer (all calls of the layer together;
    0 when both are all zero, inf when only the torch output is). Raises ValueError naming
    any parameterised torch leaf module without a flax output (so none is skipped).
    """
    reference = _torch_outputs(torch_model, inputs)
    ours = _flax_outputs(flax_model, variables, inputs)
    _check_pairing(torch_model, ours, reference)
    errors = {}
    for name, refs in reference.items():
        abs_err = max(float(np.max(np.abs(o - r))) for o, r in zip(ours[name], refs, strict=True))
        scale = max(float(np.max(np.abs(r))) for r in refs)
        if scale > 0:
            errors[name] = (abs_err, abs_err / scale)
        else:
            errors[name] = (abs_err, 0.0 if abs_err == 0 else float("inf"))
    return errors


def first_over_tolerance(errors: Mapping[str, tuple[float, float]], tolerance: float) -> str | None:
    """The first layer whose relative error exceeds `tolerance` (or is NaN), else None."""
    # `not rel <= tolerance` so that a NaN output counts as over.
    return next((name for name, (_, rel) in errors.items() if not rel <= tolerance), None)


def layer_table(errors: Mapping[str, tuple[float, float]], tolerance: float) -> str:
    """Plain-text table of `per_layer_errors`, the first layer over `tolerance` marked."""
    first = first_over_tolerance(errors, tolerance)
    width = max([len("layer (network order)"), *map(len, errors)]) + 2
    lines = [f"{'layer (network order)':<{width}}{'max abs err':>14}{'rel err':>12}"]
    for name, (abs_err, rel_err) in errors.items():
        mark = "  <- first over tolerance" if name == first else ""
        lines.append(f"{name:<{width}}{abs_err:>14.3e}{rel_err:>12.3e}{mark}")
    if first is None:
        lines.append(f"no layer over tolerance {tolerance:.1e} ({len(errors)} layers)")
    else:
        lines.append(f"first layer over tolerance {tolerance:.1e}: {first}")
    return "\n".join(lines)
