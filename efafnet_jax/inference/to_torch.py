"""Write a trained orbax checkpoint as a state_dict of the PyTorch reference.

    python -m efafnet_jax.inference.to_torch --config coco:efafnet,r50,256x192 \
        --checkpoint runs/NAME/checkpoints/STEP --out efafnet.pth

The file loads with `TorchPoseNet(config.model).load_state_dict(torch.load(FILE))`
(strict; keys named like SimpleBaseline's pose_resnet and torchvision's ResNet).
Before writing, it is loaded into the reference to prove that every key and shape fits.
"""

from __future__ import annotations

import io
import json

import torch
from absl import flags
from etils import epath

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.interop.torch_reference import torch_model
from efafnet_jax.weights import restore_variables


def main(argv):
    del argv
    f = flags.FLAGS
    state = torch_model(restore_variables(f.checkpoint), f.config.model).state_dict()
    buffer = io.BytesIO()  # torch.save writes local files only; the bytes go anywhere
    torch.save(state, buffer)
    epath.Path(f.out).write_bytes(buffer.getvalue())
    count = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {len(state)} tensors ({count} values) to {f.out}")
    if f.json:
        print(json.dumps({"out": f.out, "tensors": len(state), "values": count}))


def cli() -> None:
    """The efafnet-to-torch console script."""
    define_common_flags()
    flags.DEFINE_string(
        "checkpoint", None, "The orbax checkpoint (<workdir>/checkpoints/<step> or <workdir>/best)."
    )
    flags.DEFINE_string("out", None, "The .pth file to write (a path or gs:// URL).")
    flags.mark_flags_as_required(["checkpoint", "out"])
    run(main)


if __name__ == "__main__":
    cli()
