"""Training parity: N steps of our train step against SimpleBaseline's PyTorch recipe.

    python -m efafnet_jax.interop.compare_training --config coco:efafnet,r50,256x192 \
        [--steps 6] [--batch 2] [--seed 0] [--dtype float32|float64] \
        [--torch-checkpoint PATH] [--steps_per_epoch K] [--json]

Both sides start from the same weights (PyTorch's initialisation, or a checkpoint) and
train on the same batches of our pipeline (augmentation on, drawn once): flax through
`efafnet_jax.train.step.train_step` with the config's loss, Adam and step schedule;
PyTorch through `torch_training.train_reference` (JointsMSELoss / JointsOHKMMSELoss, + the
aux loss where the model has the aux head, `Adam(params, lr)`, `MultiStepLR` stepped at
each epoch's end). An epoch is `--steps_per_epoch` steps (default steps // 3) and the lr
drops after epochs 1 and 2, so that the schedule's boundaries fall inside the run.

Reported, as relative errors defined as in `compare` (max|jax - torch| / max(max|torch|,
1e-3 G), G the largest max|torch| of the tensors of its kind): the per-step loss, the
parameters, the BatchNorm running statistics and Adam's moments after N steps, and the
eval-mode heatmaps of both trained models on a held batch (the next one). In float32 each
side is also measured against a float64 PyTorch run of the same N steps (`*_vs_float64_*`).
The training files are the config's; a COCO-keypoint config without them trains on a
small generated dataset.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
from absl import flags
from etils import epath
from flax import traverse_util

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.data.pipeline import build_pipeline
from efafnet_jax.data.splits import read_split, sample_config, split_images
from efafnet_jax.interop.compare import normalized_input, relative_errors
from efafnet_jax.interop.convert import (
    flax_to_state_dict,
    load_torch_checkpoint,
    state_dict_to_flax,
    to_torch_layout,
    torch_key,
)
from efafnet_jax.interop.torch_reference import TorchPoseNet
from efafnet_jax.interop.torch_training import ReferenceRecipe, train_reference
from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables
from efafnet_jax.platform import for_this_machine
from efafnet_jax.train.optim import learning_rate_schedule, make_optimizer
from efafnet_jax.train.quickstart import prepare_generated_data
from efafnet_jax.train.state import TrainState
from efafnet_jax.train.step import train_step

DECAY_EPOCHS = (1, 2)  # the lr drops inside the run (see the module docstring)
QUANTITIES = ("loss", "params", "batch_stats", "adam_moments", "eval_forward")


def training_batches(
    config: ml_collections.ConfigDict, count: int, batch: int, seed: int, workdir: str
) -> list[dict]:
    """`count` augmented training batches of our pipeline, as NumPy. Without the config's
    training files (and with COCO's 17 joints) a small dataset is generated in `workdir`."""
    data = config.data
    if not epath.Path(data.train_ann).is_file():
        if config.model.num_joints != 17:
            raise FileNotFoundError(
                f"data.train_ann={data.train_ann!r}: no such file (only a 17-joint COCO "
                "config can fall back to the generated dataset)"
            )
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.data.generated = True
            config.data.generated_spec = dict(train=count * batch, val=1, seed=seed)
        data = prepare_generated_data(config, workdir).data
    records, _, spec = read_split(data, "train")
    pipeline = build_pipeline(
        records,
        spec,
        sample_config(data),
        split_images(data, "train"),
        batch_size=batch,
        seed=seed,
        train=True,
        num_epochs=-(-count * batch // len(records)) + 1,
        on_bad_record=data.on_bad_record,
    )
    batches = [dict(b) for _, b in zip(range(count), pipeline, strict=False)]
    if len(batches) < count:
        raise ValueError(f"{len(records)} training persons give fewer than {count} batches")
    return batches


def reference_recipe(train: ml_collections.ConfigDict, steps_per_epoch: int) -> ReferenceRecipe:
    """The config's training choices, as SimpleBaseline's PyTorch recipe expresses them."""
    if train.get("warmup_epochs", 0) or train.get("lr_reference_batch", 0):
        raise ValueError("the reference recipe has no warm-up and no lr scaling by batch")
    return ReferenceRecipe(
        learning_rate=train.learning_rate,
        milestones=tuple(train.decay_epochs),
        gamma=train.decay_factor,
        steps_per_epoch=steps_per_epoch,
        loss=train.loss,
        ohkm_top_k=train.ohkm_top_k,
        aux_loss_weight=train.aux_loss_weight,
    )


def _flax_training(model, variables, batches, held, train, schedule, dtype) -> dict:
    """Our train step over `batches`: per-step loss and lr, the final variables (torch
    keys and layout), Adam's moments, and the eval-mode heatmaps on `held`."""
    state = TrainState.create(variables, make_optimizer(train, schedule))
    step = jax.jit(functools.partial(train_step, model=model, train=train, schedule=schedule))
    losses, lrs = [], []
    for batch in batches:
        inputs = {
            "image": jnp.asarray(batch["image"]),
            "target": jnp.asarray(batch["target"], dtype),
            "target_weight": jnp.asarray(batch["target_weight"], dtype),
        }
        state, metrics = step(state, inputs)
        losses.append(float(metrics["loss"]))
        lrs.append(float(metrics["lr"]))
    heatmaps = model.apply(state.variables(), jnp.asarray(held["image"]), train=False)
    adam = next(s for s in state.opt_state if isinstance(s, optax.ScaleByAdamState))
    moments = {}
    for name, tree in (("exp_avg", adam.mu), ("exp_avg_sq", adam.nu)):
        for path, value in traverse_util.flatten_dict(tree).items():
            full = ("params", *path)
            moments[f"{torch_key(full)}/{name}"] = to_torch_layout(full, np.asarray(value))
    return dict(
        losses=losses,
        lrs=lrs,
        state=flax_to_state_dict(state.variables()),
        moments=moments,
        heatmaps=np.asarray(heatmaps, np.float64),
    )


def _torch_training(model, batches, held_input, recipe) -> dict:
    """The PyTorch recipe over `batches`; the same quantities as `_flax_training`."""
    losses, lrs, optimizer = train_reference(model, batches, recipe)
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(held_input)).permute(0, 3, 1, 2).to(dtype)
        heatmaps = model(x).permute(0, 2, 3, 1).double().numpy()
    moments = {}
    for name, parameter in model.named_parameters():
        for moment in ("exp_avg", "exp_avg_sq"):
            moments[f"{name}/{moment}"] = optimizer.state[parameter][moment].double().numpy()
    state = {k: v.double().numpy() for k, v in model.state_dict().items()}
    return dict(losses=losses, lrs=lrs, state=state, moments=moments, heatmaps=heatmaps)


def _split_state(state: dict, parameter_names: set[str]) -> tuple[dict, dict]:
    params = {k: np.asarray(v, np.float64) for k, v in state.items() if k in parameter_names}
    stats = {
        k: np.asarray(v, np.float64)
        for k, v in state.items()
        if k.endswith(("running_mean", "running_var"))
    }
    return params, stats


def run_errors(ours: dict, reference: dict, parameter_names: set[str]) -> dict[str, float]:
    """Worst relative error of each quantity of QUANTITIES, `ours` against `reference`."""
    loss = max(
        abs(a - b) / max(abs(b), 1e-30)
        for a, b in zip(ours["losses"], reference["losses"], strict=True)
    )
    params, stats = _split_state(ours["state"], parameter_names)
    ref_params, ref_stats = _split_state(reference["state"], parameter_names)
    errors = {"loss": loss}
    for name, a, b in (
        ("params", params, ref_params),
        ("batch_stats", stats, ref_stats),
        ("adam_moments", ours["moments"], reference["moments"]),
        ("eval_forward", {"h": ours["heatmaps"]}, {"h": reference["heatmaps"]}),
    ):
        errors[name] = max(rel for _, rel in relative_errors(a, b).values())
    return errors


@dataclasses.dataclass
class TrainingCase:
    """What both sides start from: the config (dtype and schedule set), the batches (with
    the normalised float64 `input` PyTorch takes), the held batch, the initial PyTorch model (in
    float64, holding float32 values exactly) and the reference recipe."""

    config: ml_collections.ConfigDict
    dtype: str
    steps_per_epoch: int
    batches: list[dict]
    held: dict
    initial: torch.nn.Module
    recipe: ReferenceRecipe
    seed: int


def training_case(
    config: ml_collections.ConfigDict,
    steps: int,
    batch: int,
    seed: int,
    dtype: str,
    torch_checkpoint: str | None = None,
    steps_per_epoch: int | None = None,
) -> TrainingCase:
    """The starting point of a comparison (see the module docstring)."""
    steps_per_epoch = steps_per_epoch or max(1, steps // 3)
    config = config.copy_and_resolve_references()
    config.train.decay_epochs = DECAY_EPOCHS
    m = config.model
    m.dtype = m.param_dtype = dtype
    with tempfile.TemporaryDirectory() as workdir:
        batches = training_batches(config, steps + 1, batch, seed, workdir)
    for b in batches:
        b["input"] = normalized_input(b["image"], m)  # float64; each side casts it
    held = batches.pop()
    torch.manual_seed(seed)
    initial = TorchPoseNet(m)
    if torch_checkpoint:
        initial.load_state_dict(
            {k: torch.from_numpy(v) for k, v in load_torch_checkpoint(torch_checkpoint).items()}
        )
    recipe = reference_recipe(config.train, steps_per_epoch)
    return TrainingCase(
        config, dtype, steps_per_epoch, batches, held, initial.double(), recipe, seed
    )


def flax_side(case: TrainingCase) -> dict:
    """Our training from the case's initial weights (see `_flax_training`)."""
    with jax.enable_x64(case.dtype == "float64"):
        model = create_model(case.config.model)
        template = abstract_variables(model, case.config.data.crop_hw)
        variables, _ = state_dict_to_flax(case.initial.state_dict(), template)
        variables = jax.tree.map(lambda v: jnp.asarray(v, case.dtype), variables)
        batch = len(case.held["image"])
        schedule = learning_rate_schedule(case.config.train, case.steps_per_epoch, batch)
        return _flax_training(
            model, variables, case.batches, case.held, case.config.train, schedule, case.dtype
        )


def torch_side(case: TrainingCase, dtype: str | None = None, **recipe_changes) -> dict:
    """The PyTorch recipe from the case's initial weights, in `dtype` (default the
    case's). `recipe_changes`: ReferenceRecipe fields changed on this side only (a weight
    decay, a BatchNorm momentum, shifted milestones), to see that a difference is found."""
    dtype = dtype or case.dtype
    recipe = dataclasses.replace(case.recipe, **recipe_changes)
    batches = [dict(b, input=b["input"].astype(dtype)) for b in case.batches]
    model = copy.deepcopy(case.initial).to(getattr(torch, dtype))
    return _torch_training(model, batches, case.held["input"].astype(dtype), recipe)


def compare_training(
    config: ml_collections.ConfigDict,
    steps: int = 6,
    batch: int = 2,
    seed: int = 0,
    dtype: str = "float32",
    torch_checkpoint: str | None = None,
    steps_per_epoch: int | None = None,
) -> dict:
    """Trains both sides `steps` steps and returns the report (the module docstring)."""
    case = training_case(config, steps, batch, seed, dtype, torch_checkpoint, steps_per_epoch)
    parameter_names = {name for name, _ in case.initial.named_parameters()}
    torch_run, flax_run = torch_side(case), flax_side(case)
    errors = run_errors(flax_run, torch_run, parameter_names)
    report = {
        "config": case.config.name,
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "dtype": dtype,
        "steps_per_epoch": case.steps_per_epoch,
        "loss_jax": flax_run["losses"],
        "loss_torch": torch_run["losses"],
        "lr_jax": flax_run["lrs"],
        "lr_torch": torch_run["lrs"],
    }
    report.update({f"max_rel_err_{q}": errors[q] for q in QUANTITIES})
    if dtype == "float32":
        truth = torch_side(case, "float64")
        for side, side_run in (("jax", flax_run), ("torch", torch_run)):
            side_errors = run_errors(side_run, truth, parameter_names)
            report.update({f"{side}_vs_float64_rel_err_{q}": side_errors[q] for q in QUANTITIES})
    return report


def main(argv):
    del argv
    f = flags.FLAGS
    report = compare_training(
        for_this_machine(f.config),
        f.steps,
        f.batch,
        f.seed,
        f.dtype,
        f.torch_checkpoint,
        f.steps_per_epoch,
    )
    print(
        f"config {report['config']}  {report['steps']} steps of batch {report['batch']}  "
        f"dtype {report['dtype']}  epoch = {report['steps_per_epoch']} steps"
    )
    print(f"{'step':>4}  {'lr jax':>10}  {'lr torch':>10}  {'loss jax':>14}  {'loss torch':>14}")
    for i, (lj, lt, loss_j, loss_t) in enumerate(
        zip(
            report["lr_jax"],
            report["lr_torch"],
            report["loss_jax"],
            report["loss_torch"],
            strict=True,
        )
    ):
        print(f"{i:>4}  {lj:>10.3e}  {lt:>10.3e}  {loss_j:>14.8e}  {loss_t:>14.8e}")
    for q in QUANTITIES:
        line = f"{q:<13} jax vs torch {report[f'max_rel_err_{q}']:.3e}"
        if f"jax_vs_float64_rel_err_{q}" in report:
            line += (
                f"; vs float64 torch: jax {report[f'jax_vs_float64_rel_err_{q}']:.3e}, "
                f"torch {report[f'torch_vs_float64_rel_err_{q}']:.3e}"
            )
        print(line)
    if f.json:
        print(json.dumps(report))


def cli() -> None:
    """The efafnet-compare-training console script."""
    define_common_flags()
    flags.DEFINE_integer("steps", 6, "Training steps on each side.")
    flags.DEFINE_integer("batch", 2, "Batch size.")
    flags.DEFINE_integer("seed", 0, "Seed for the weights and the batches.")
    flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Dtype of both sides.")
    flags.DEFINE_string("torch_checkpoint", None, "A .pth state_dict (else PyTorch's init).")
    flags.DEFINE_integer(
        "steps_per_epoch", None, "Steps per schedule epoch (default steps // 3, at least 1)."
    )
    run(main)


if __name__ == "__main__":
    cli()
