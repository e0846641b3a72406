"""Numeric difference between the flax model and the PyTorch reference.

    python -m efafnet_jax.interop.compare --config coco:efafnet \
        [--torch-checkpoint PATH] [--batch 2] [--seed 0] [--json] \
        [--per-layer [--layer_tolerance TOL]]

Both networks get the same weights (a checkpoint, or PyTorch's initialisation with
BatchNorm statistics calibrated on one batch) and the same normalised input. In
eval and train mode it compares the heatmaps, the input gradient and every
parameter gradient of an MSE loss against a random target. Relative error of a
tensor = max|jax - torch| / max(max|torch|, 1e-3 * G), G the largest max|torch|
among tensors of its kind (mode x forward/grad); the figure is the worst tensor.

In float32 both are also measured against the float64 PyTorch run of the same
weights and input (`--float64_truth`, on by default): a randomly initialised
ResNet amplifies rounding (see docs/numerics.md), so the float32
difference of two correct implementations is bounded by their distance from the
exact result, which these figures show. `--dtype float64` runs both in float64.

`--per-layer` adds each layer's eval-mode forward error in network order and the
first layer over `--layer_tolerance` (1e-10 in float64, 1e-4 in float32): where a
converted checkpoint starts to disagree (`per_layer.per_layer_errors`).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from absl import flags
from flax import traverse_util

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.interop.convert import (
    load_torch_checkpoint,
    state_dict_to_flax,
    to_torch_layout,
    torch_key,
)
from efafnet_jax.interop.per_layer import (
    default_layer_tolerance,
    first_over_tolerance,
    layer_table,
    per_layer_errors,
)
from efafnet_jax.interop.torch_reference import TorchPoseNet
from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables
from efafnet_jax.platform import for_this_machine


def calibrate_batch_norm(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """Sets every BatchNorm's running statistics to those of one batch (momentum 1)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(inputs)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def normalized_input(images: np.ndarray, model_config: ml_collections.ConfigDict) -> np.ndarray:
    """uint8 NHWC crops -> the model's normalised input, in float64 NumPy."""
    x = images.astype(np.float64) / 255.0
    if model_config.color_order == "bgr":
        x = x[..., ::-1]
    return (x - np.asarray(model_config.mean)) / np.asarray(model_config.std)


def torch_pass(
    model: torch.nn.Module, inputs: np.ndarray, target: np.ndarray, train: bool
) -> tuple[dict, dict]:
    """Heatmaps (NHWC) and gradients of the MSE to `target` (plus the aux head's, if any)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dtype = next(model.parameters()).dtype
    model.train(train)
    model.zero_grad(set_to_none=True)
    x = torch.from_numpy(inputs).permute(0, 3, 1, 2).to(dtype).requires_grad_(True)
    out = model(x)
    outputs = {"heatmaps": out}
    if model.aux_supervision:
        outputs["aux_heatmaps"] = model.aux_heatmaps
    target = torch.from_numpy(target).permute(0, 3, 1, 2).to(dtype)
    loss = sum(torch.mean((o - target) ** 2) for o in outputs.values())
    loss.backward()
    model.load_state_dict(state)  # train mode moved the running statistics
    tensors = {k: o.detach().permute(0, 2, 3, 1).double().numpy() for k, o in outputs.items()}
    grads = {"input": x.grad.permute(0, 2, 3, 1).double().numpy()}
    grads.update({k: p.grad.double().numpy() for k, p in model.named_parameters()})
    return tensors, grads


def flax_pass(
    model, variables: dict, inputs: np.ndarray, target: np.ndarray, train: bool
) -> tuple[dict, dict]:
    """The same as `torch_pass` for the flax model; grads keyed by torch names."""
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(params, x):
        out, state = model.apply(
            {"params": params, **rest}, x, train=train, mutable=["batch_stats", "intermediates"]
        )
        outputs = {"heatmaps": out}
        if model.aux_supervision:
            outputs["aux_heatmaps"] = state["intermediates"]["aux_heatmaps"][0]
        return sum(jnp.mean((o - target) ** 2) for o in outputs.values()), outputs

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    (_, outputs), (param_grads, input_grad) = grad_fn(
        variables["params"], jnp.asarray(inputs, model.dtype)
    )
    grads = {"input": np.asarray(input_grad, np.float64)}
    for path, value in traverse_util.flatten_dict(param_grads).items():
        full = ("params", *path)
        grads[torch_key(full)] = to_torch_layout(full, np.asarray(value, np.float64))
    return {k: np.asarray(o, np.float64) for k, o in outputs.items()}, grads


def relative_errors(ours: dict, reference: dict) -> dict[str, tuple[float, float]]:
    """{name: (max abs error, relative error)} with the floor 1e-3 * G of the module doc."""
    if set(ours) != set(reference):
        missing = sorted(set(ours) ^ set(reference))
        raise KeyError(f"tensors present on one side only: {missing[:5]}")
    g = max(float(np.max(np.abs(v))) for v in reference.values())
    errors = {}
    for name, ref in reference.items():
        abs_err = float(np.max(np.abs(ours[name] - ref)))
        errors[name] = (abs_err, abs_err / max(float(np.max(np.abs(ref))), 1e-3 * g))
    return errors


def _worst(errors: dict[str, tuple[float, float]], kind: str) -> tuple[str, float, float]:
    items = {k: v for k, v in errors.items() if f"/{kind}/" in k}
    name = max(items, key=lambda k: items[k][1])
    return name, items[name][1], max(v[0] for v in items.values())


def _errors_by_tensor(runs_a: dict, runs_b: dict) -> dict[str, tuple[float, float]]:
    errors = {}
    for mode in runs_b:
        for kind, a, b in zip(("forward", "grad"), runs_a[mode], runs_b[mode], strict=True):
            for name, errs in relative_errors(a, b).items():
                errors[f"{mode}/{kind}/{name}"] = errs
    return errors


def compare(
    config: ml_collections.ConfigDict,
    torch_checkpoint: str | None = None,
    batch: int = 2,
    seed: int = 0,
    dtype: str = "float32",
    float64_truth: bool = True,
    per_layer: bool = False,
    layer_tolerance: float | None = None,
) -> dict:
    """Runs both networks and returns per-tensor errors and the worst figures.

    With `per_layer` also `layer_errors` ({torch module name: (max abs, rel)} in network
    order), `layers` ([name, rel] pairs), `layer_tolerance` (None: from `dtype`) and
    `first_layer_over_tolerance` (a name or None).
    """
    torch.manual_seed(seed)
    m = config.model.copy_and_resolve_references()
    m.dtype = m.param_dtype = dtype
    height, width = config.data.crop_hw
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    inputs = normalized_input(images, m).astype(dtype)
    target = (0.1 * rng.normal(size=(batch, height // 4, width // 4, m.num_joints))).astype(dtype)

    reference = TorchPoseNet(m)
    if torch_checkpoint:
        reference.load_state_dict(
            {k: torch.from_numpy(v) for k, v in load_torch_checkpoint(torch_checkpoint).items()}
        )
    else:
        calibrate_batch_norm(
            reference, torch.from_numpy(inputs.astype(np.float32)).permute(0, 3, 1, 2)
        )
    torch_dtype = getattr(torch, dtype)
    reference = reference.to(torch_dtype)
    modes = {"eval": False, "train": True}
    torch_runs = {
        mode: torch_pass(reference, inputs, target, train) for mode, train in modes.items()
    }
    with jax.enable_x64(dtype == "float64"):
        model = create_model(m)
        template = abstract_variables(model, (height, width))
        variables, _ = state_dict_to_flax(reference.state_dict(), template)
        flax_runs = {
            mode: flax_pass(model, variables, inputs, target, train)
            for mode, train in modes.items()
        }
        if per_layer:
            layer_errors = per_layer_errors(reference, model, variables, inputs)

    errors = _errors_by_tensor(flax_runs, torch_runs)
    summary = {"config": config.name, "batch": batch, "seed": seed, "dtype": dtype}
    for kind in ("forward", "grad"):
        name, rel, abs_err = _worst(errors, kind)
        summary.update(
            {f"max_rel_err_{kind}": rel, f"max_abs_err_{kind}": abs_err, f"worst_{kind}": name}
        )
    if float64_truth and dtype == "float32":
        truth_model = reference.to(torch.float64)
        truth = {
            mode: torch_pass(truth_model, inputs.astype(np.float64), target, train)
            for mode, train in modes.items()
        }
        for side, runs in (("jax", flax_runs), ("torch", torch_runs)):
            side_errors = _errors_by_tensor(runs, truth)
            for kind in ("forward", "grad"):
                summary[f"{side}_vs_float64_rel_err_{kind}"] = _worst(side_errors, kind)[1]
    if per_layer:
        tolerance = default_layer_tolerance(dtype) if layer_tolerance is None else layer_tolerance
        summary["layer_tolerance"] = tolerance
        summary["first_layer_over_tolerance"] = first_over_tolerance(layer_errors, tolerance)
        summary["layers"] = [[name, rel] for name, (_, rel) in layer_errors.items()]
        summary["layer_errors"] = layer_errors
    summary["tensors"] = errors
    return summary


def _define_flags() -> None:
    define_common_flags()
    flags.DEFINE_string("torch_checkpoint", None, "A .pth state_dict (else PyTorch's init).")
    flags.DEFINE_integer("batch", 2, "Batch size.")
    flags.DEFINE_integer("seed", 0, "Seed for weights, input and target.")
    flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Compute dtype of both.")
    flags.DEFINE_bool(
        "float64_truth", True, "In float32, also measure both against a float64 PyTorch run."
    )
    flags.DEFINE_bool(
        "per_layer", False, "Also list each layer's forward error and the first over tolerance."
    )
    flags.DEFINE_float(
        "layer_tolerance", None, "With --per_layer: relative error tolerance (default by dtype)."
    )


def main(argv):
    del argv
    f = flags.FLAGS
    result = compare(
        for_this_machine(f.config),
        f.torch_checkpoint,
        f.batch,
        f.seed,
        f.dtype,
        f.float64_truth,
        per_layer=f.per_layer,
        layer_tolerance=f.layer_tolerance,
    )
    worst = sorted(result["tensors"].items(), key=lambda kv: -kv[1][1])[:10]
    print(
        f"config {result['config']}  batch {result['batch']}  seed {result['seed']}  "
        f"dtype {result['dtype']}  ({len(result['tensors'])} tensors compared)"
    )
    print(f"{'tensor (mode/kind/name)':<60}{'max abs err':>14}{'rel err':>12}")
    for name, (abs_err, rel_err) in worst:
        print(f"{name:<60}{abs_err:>14.3e}{rel_err:>12.3e}")
    for kind in ("forward", "grad"):
        line = (
            f"{kind:<8} jax vs torch {result[f'max_rel_err_{kind}']:.3e}  "
            f"(worst: {result[f'worst_{kind}']})"
        )
        if f"jax_vs_float64_rel_err_{kind}" in result:
            line += (
                f"; vs float64 torch: jax {result[f'jax_vs_float64_rel_err_{kind}']:.3e}, "
                f"torch {result[f'torch_vs_float64_rel_err_{kind}']:.3e}"
            )
        print(line)
    if "layer_errors" in result:
        print(layer_table(result["layer_errors"], result["layer_tolerance"]))
    if flags.FLAGS.json:
        per_tensor = ("tensors", "layer_errors")
        print(json.dumps({k: v for k, v in result.items() if k not in per_tensor}))


def cli() -> None:
    """The efafnet-compare console script."""
    _define_flags()
    run(main)


if __name__ == "__main__":
    cli()
