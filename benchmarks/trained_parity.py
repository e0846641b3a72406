"""Float32 parity on trained weights: the quickstart model, trained briefly, converted to
PyTorch with `to_torch`, compared in eval mode with `compare`.

    python benchmarks/trained_parity.py [--epochs 2] [--workdir runs/trained_parity] [--json]

A randomly initialised ResNet amplifies float32 rounding (docs/numerics.md, "Reading the
float32 figures"); a trained network with real BatchNorm running statistics is the case users
have. Prints the eval-mode heatmap error between the two frameworks and each one's
distance from the float64 PyTorch run of the same weights and input.
"""

import json
import os
import subprocess
import sys

from absl import flags

from efafnet_jax.cli import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)


def main(argv) -> None:
    del argv
    args = flags.FLAGS

    config_arg = "quickstart"
    _run("train.py", "--config", config_arg, "--workdir", args.workdir,
         f"--config.train.epochs={args.epochs}")  # fmt: skip
    from efafnet_jax.weights import latest_checkpoint

    pth = os.path.join(args.workdir, "model.pth")
    _run("-m", "efafnet_jax.inference.to_torch", "--config", config_arg,
         "--checkpoint", latest_checkpoint(args.workdir), "--out", pth)  # fmt: skip

    from efafnet_jax.config import load_config
    from efafnet_jax.interop.compare import compare
    from efafnet_jax.platform import for_this_machine

    config = for_this_machine(load_config(config_arg))
    result = compare(config, pth, batch=args.batch, dtype="float32")
    tensors = result["tensors"]
    figures = {
        "epochs": args.epochs,
        "batch": args.batch,
        "eval_forward_jax_vs_torch": tensors["eval/forward/heatmaps"][1],
        "train_forward_jax_vs_torch": tensors["train/forward/heatmaps"][1],
        "jax_vs_float64_rel_err_forward": result["jax_vs_float64_rel_err_forward"],
        "torch_vs_float64_rel_err_forward": result["torch_vs_float64_rel_err_forward"],
    }
    print(
        f"quickstart after {args.epochs} epochs, float32, batch {args.batch}: eval-mode "
        f"heatmaps jax vs torch {figures['eval_forward_jax_vs_torch']:.2e} (train mode "
        f"{figures['train_forward_jax_vs_torch']:.2e}); vs float64 torch: jax "
        f"{figures['jax_vs_float64_rel_err_forward']:.2e}, torch "
        f"{figures['torch_vs_float64_rel_err_forward']:.2e}"
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    flags.DEFINE_float("epochs", 2.0, "Epochs of quickstart training (--config.train.epochs).")
    flags.DEFINE_string(
        "workdir",
        os.path.join(REPO, "runs", "trained_parity"),
        "The training workdir; the converted PyTorch weights go to <workdir>/model.pth.",
    )
    flags.DEFINE_integer("batch", 8, "Crops per forward pass in the comparison.")
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    run(main)
