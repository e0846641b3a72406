"""What fits where: the bfloat16 train step compiled for a pod, its FLOPs and memory.

    python benchmarks/pod_plan.py [--variants efafnet] [--depths 50,101,152]
        [--sizes 256x192,384x288] [--batches 32,64] [--json]

Lowers and compiles `efafnet_jax.train.step.make_train_step` (Adam, donated state,
batch sharded over 'data') on the 'data' mesh of all devices: 8 fake CPU devices
unless XLA_FLAGS / JAX_PLATFORMS say otherwise. Compute dtype bfloat16, float32
parameters, the stock convolutions (model.conv_impl "xla", what GPUs and TPUs run).
Nothing is allocated: state and batch are ShapeDtypeStructs. Per config and batch per
device it reports the compiled program's FLOPs per image (`cost_analysis`), its
per-device memory (`memory_analysis`) and its all-reduces.

The figures come from the CPU compiler (XLA:CPU): GPU and TPU compilers fuse, lay out
and schedule differently (and XLA:CPU computes bfloat16 convolutions in float32), so
they estimate what fits; they are not measurements on a GPU or TPU.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time
from collections.abc import Sequence

# Run as a command, the pod is 8 fake CPU devices unless the caller chose (set before jax
# is imported); imported (tests), the importer's environment stays as it is.
if __name__ == "__main__":
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import flags  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from benchmarks.common import forward_flops, run_facts  # noqa: E402
from efafnet_jax.cli import run  # noqa: E402
from efafnet_jax.config import load_config  # noqa: E402
from efafnet_jax.models import create_model  # noqa: E402
from efafnet_jax.models.summary import abstract_variables  # noqa: E402
from efafnet_jax.sharding import batch_sharded, data_mesh, replicated  # noqa: E402
from efafnet_jax.train.optim import learning_rate_schedule, make_optimizer  # noqa: E402
from efafnet_jax.train.state import TrainState  # noqa: E402
from efafnet_jax.train.step import make_train_step  # noqa: E402

COCO_CONFIG = "coco"  # the packaged config (efafnet_jax/configs/coco.py)
# Instructions that move data between host and device inside a step.
HOST_TRANSFER_OPS = ("infeed", "outfeed", "send", "recv", "send-done", "recv-done")
GIB = 2**30


def pod_config(variant: str, depth: int, crop_hw: tuple[int, int]) -> ml_collections.ConfigDict:
    """COCO's config for `variant`, ResNet-`depth`, `crop_hw`, as a GPU/TPU pod trains it:
    bfloat16 compute, float32 parameters, the stock XLA convolutions."""
    height, width = crop_hw
    config = load_config(f"{COCO_CONFIG}:{variant},r{depth},{height}x{width}")
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.conv_impl = "xla"
    config.train.compute_dtype = "bfloat16"
    return config


def lower_train_step(
    config: ml_collections.ConfigDict, mesh: Mesh, batch_per_device: int
) -> tuple[jax.stages.Lowered, TrainState]:
    """The train step lowered for `mesh` on abstract arguments; also the abstract state.

    The state is replicated, the batch (BATCH_KEYS: uint8 crops, float32 targets and
    weights) split over 'data', `batch_per_device` rows per device.
    """
    model = create_model(config.model)
    global_batch = batch_per_device * mesh.size
    schedule = learning_rate_schedule(config.train, 1000, global_batch)
    tx = make_optimizer(config.train, schedule)
    variables = abstract_variables(model, tuple(config.data.crop_hw))
    state = jax.eval_shape(lambda v: TrainState.create(v, tx), variables)
    state_sharding = jax.tree_util.tree_map(lambda _: replicated(mesh), state)
    rows = batch_sharded(mesh)
    height, width = config.data.crop_hw
    map_h, map_w = config.data.heatmap_hw
    joints = config.model.num_joints
    batch = {
        "image": jax.ShapeDtypeStruct((global_batch, height, width, 3), jnp.uint8, sharding=rows),
        "target": jax.ShapeDtypeStruct(
            (global_batch, map_h, map_w, joints), jnp.float32, sharding=rows
        ),
        "target_weight": jax.ShapeDtypeStruct((global_batch, joints), jnp.float32, sharding=rows),
    }
    step = make_train_step(model, config.train, schedule, mesh, state_sharding)
    return step.lower(state, batch), state


def _tensor_dtype(tensor_type: str) -> str:
    """'tensor<16x128x96x3xbf16>' -> 'bf16'; 'tensor<i32>' -> 'i32'."""
    return tensor_type[len("tensor<") : -1].split("x")[-1]


def _group_sizes(line: str) -> list[int]:
    """Sizes of the replica groups of one all-reduce, in any of HLO's three spellings:
    explicit {{0,1,..}}, iota [groups,size]<=[n], or mesh['a'=8,..] {'a'}."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", line)
    if mesh:
        sizes = {name: int(size) for name, size in re.findall(r"'(\w+)'=(\d+)", mesh.group(1))}
        size = 1
        for name in re.findall(r"'(\w+)'", mesh.group(2)):
            size *= sizes[name]
        return [size]
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return [int(iota.group(2))] * int(iota.group(1))
    explicit = re.search(r"replica_groups=\{(\{[\d,]+\}(?:,\{[\d,]+\})*)\}", line)
    if explicit:
        return [len(g.split(",")) for g in re.findall(r"\{([\d,]+)\}", explicit.group(1))]
    raise ValueError(f"unknown replica_groups spelling in: {line[:300]}")


def program_facts(lowered_text: str, compiled_text: str) -> dict:
    """What the test and the table read from one program.

    lowered_text: the StableHLO JAX hands to XLA (`Lowered.as_text()`), what a GPU or
    TPU compiler receives: the dtypes of its convolutions and arguments. compiled_text:
    the compiled per-device HLO (`Compiled.as_text()`): all-reduces (their replica
    group sizes and result shapes, the gradients among them), input-output aliases,
    custom-call targets and host transfers. XLA:CPU upcasts bfloat16 convolutions to
    float32 (measured: all 324 of R50 EFAFNet's compiled convolutions are f32, fed by
    converts), so the compute dtype is read from the lowered module.
    """
    conv_operands = collections.Counter()
    for line in lowered_text.splitlines():
        if "stablehlo.convolution" in line:
            operands = re.search(r":\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)\s*->", line)
            conv_operands[tuple(_tensor_dtype(t) for t in operands.groups())] += 1
    main = next(line for line in lowered_text.splitlines() if "func.func public @main(" in line)
    argument_dtypes = [_tensor_dtype(t) for t in re.findall(r"%arg\d+: (tensor<[^>]*>)", main)]

    all_reduces = [
        line
        for line in compiled_text.splitlines()
        # The substring test first: the lazy regex alone takes 15 s on R50's longest lines.
        if " all-reduce" in line and re.search(r"= .*? all-reduce(-start)?\(", line)
    ]
    reduced_shapes = collections.Counter()
    for line in all_reduces:
        result_type = line.split("=", 1)[1].split(" all-reduce", 1)[0]
        for dims in re.findall(r"\w+\[([\d,]*)\]", result_type):
            reduced_shapes[tuple(int(d) for d in dims.split(",") if d)] += 1
    header = compiled_text.splitlines()[0]
    alias = re.search(r"input_output_alias=\{(.*?)\s\}", header)
    aliased = sorted(
        {int(p) for p in re.findall(r"\}: \((\d+),", alias.group(1))} if alias else set()
    )
    return {
        "conv_operand_dtypes": dict(conv_operands),
        "argument_dtypes": argument_dtypes,
        "all_reduces": len(all_reduces),
        "all_reduce_group_sizes": sorted({s for line in all_reduces for s in _group_sizes(line)}),
        "all_reduced_shapes": reduced_shapes,
        "aliased_parameters": aliased,
        "custom_call_targets": sorted(
            set(re.findall(r'custom_call_target="([^"]+)"', compiled_text))
        ),
        "host_transfers": sorted(
            {op for op in HOST_TRANSFER_OPS if re.search(rf"\s{op}\(", compiled_text)}
        ),
    }


def flops_and_memory(compiled: jax.stages.Compiled, batch_per_device: int) -> dict:
    """FLOPs per image and bytes per device of one compiled SPMD program.

    cost_analysis counts the per-device program (the SPMD partitioner's shard), not the
    global one: tiny EFAFNet at 2 rows per device gives 2.06e8 FLOPs per image on 1 fake
    device and 2.10e8 on 8 (their all-reduces), not 8x, so FLOPs per image = flops /
    rows per device. Memory per device = arguments + outputs - aliased
    + temporaries: the arguments (state, batch shard) live through the step, outputs
    are new buffers except those aliased to donated arguments (counted in both), temp
    is the scratch peak; generated code is left out (host memory on GPU/TPU).
    """
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0]
    memory = compiled.memory_analysis()
    return {
        "flops_per_image": cost["flops"] / batch_per_device,
        "per_device_bytes": memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes,
        "argument_bytes": memory.argument_size_in_bytes,
        "temp_bytes": memory.temp_size_in_bytes,
    }


def plan_row(
    variant: str, depth: int, crop_hw: tuple[int, int], batches: Sequence[int], mesh: Mesh
) -> dict:
    """One table row: a config compiled at each batch per device in `batches`."""
    config = pod_config(variant, depth, crop_hw)
    row = {
        "variant": variant,
        "depth": depth,
        "input_hw": list(crop_hw),
        "model_train_flops_per_image": 3.0 * forward_flops(config),  # forward + 2x backward
        "at_batch_per_device": {},
    }
    for batch in batches:
        start = time.perf_counter()
        lowered, _ = lower_train_step(config, mesh, batch)
        compiled = lowered.compile()
        seconds = time.perf_counter() - start
        facts = program_facts(lowered.as_text(), compiled.as_text())
        row["at_batch_per_device"][str(batch)] = {
            **flops_and_memory(compiled, batch),
            "all_reduces": facts["all_reduces"],
            "compile_s": round(seconds, 1),
        }
        print(
            f"{config.name}, {batch} per device on {mesh.size} devices: "
            f"lowered and compiled in {seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return row


def print_table(rows: list[dict], batches: Sequence[int]) -> None:
    """The rows as text: GFLOPs per image at the first batch, GiB per device at each."""
    header = f"{'variant':10}{'depth':>6}{'input':>9}{'GFLOPs/img':>12}"
    print(header + "".join(f"{f'GiB @{b}':>10}" for b in batches))
    for row in rows:
        at = row["at_batch_per_device"]
        gflops = at[str(batches[0])]["flops_per_image"] / 1e9
        print(
            f"{row['variant']:10}{'R' + str(row['depth']):>6}"
            f"{'x'.join(map(str, row['input_hw'])):>9}{gflops:12.1f}"
            + "".join(f"{at[str(b)]['per_device_bytes'] / GIB:10.2f}" for b in batches)
        )


def main(argv):
    del argv
    f = flags.FLAGS
    mesh = data_mesh()
    batches = [int(b) for b in f.batches]
    rows = [
        plan_row(variant, int(depth), tuple(int(v) for v in size.split("x")), batches, mesh)
        for variant in f.variants
        for depth in f.depths
        for size in f.sizes
    ]
    print_table(rows, batches)
    if f.json:
        record = {
            "compiler": f"XLA:{jax.default_backend().upper()}",
            "devices": mesh.size,
            "compute_dtype": "bfloat16",
            "param_dtype": "float32",
            "rows": rows,
            **run_facts(),
        }
        print(json.dumps(record))


if __name__ == "__main__":
    flags.DEFINE_list("variants", ["efafnet"], "Table VI rows (coco variants).")
    flags.DEFINE_list("depths", ["50", "101", "152"], "ResNet depths.")
    flags.DEFINE_list("sizes", ["256x192", "384x288"], "Input sizes, HxW.")
    flags.DEFINE_list("batches", ["32", "64"], "Images per device.")
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    run(main)
