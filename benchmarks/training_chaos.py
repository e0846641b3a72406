"""How far PyTorch's own float64 training drifts from a rounding-level change: the floor
under any training-parity tolerance.

    python benchmarks/training_chaos.py [--variant efafnet] [--steps 6] [--batch 2] [--json]

Trains the PyTorch reference recipe (`compare_training.torch_side`) on R50 256x192 twice
in float64, the second time from initial weights multiplied by (1 + u), u uniform in
+-2.2e-16 (one ulp), and reports the same figures `compare_training` does between the two
runs, and the loss difference per step.
"""

import copy
import json
import os
import sys

import torch
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efafnet_jax.cli import run  # noqa: E402
from efafnet_jax.config import load_config  # noqa: E402
from efafnet_jax.interop import compare_training as ct  # noqa: E402
from efafnet_jax.platform import for_this_machine  # noqa: E402

ULP = 2.2e-16


def main(argv) -> None:
    del argv
    args = flags.FLAGS
    config = for_this_machine(load_config(f"coco:{args.variant},r50,256x192"))
    case = ct.training_case(config, args.steps, args.batch, 0, "float64")
    names = {name for name, _ in case.initial.named_parameters()}
    base = ct.torch_side(case)
    perturbed = copy.deepcopy(case.initial)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.mul_(1 + ULP * (2 * torch.rand(p.shape, generator=generator, dtype=p.dtype) - 1))
    run = ct.torch_side(ct.dataclasses.replace(case, initial=perturbed))
    report = ct.run_errors(run, base, names)
    report["loss_per_step"] = [
        abs(a - b) / abs(b) for a, b in zip(run["losses"], base["losses"], strict=True)
    ]
    print(
        f"{args.variant} R50 float64, PyTorch against itself from weights 1 ulp apart, "
        f"{args.steps} steps: "
        + ", ".join(f"{k} {v:.1e}" for k, v in report.items() if k != "loss_per_step")
        + "; loss per step "
        + " ".join(f"{v:.1e}" for v in report["loss_per_step"])
    )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    flags.DEFINE_string(
        "variant",
        "efafnet",
        "Model variant (efafnet, sbn, sbn_fam, ...): the network is coco:VARIANT,r50,256x192.",
    )
    flags.DEFINE_integer("steps", 6, "Training steps of each run.")
    flags.DEFINE_integer("batch", 2, "Batch size of each step.")
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    run(main)
