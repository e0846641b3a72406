"""The pod program, checked at compile time (issue #16, "Pod-ready loops").

The R50 EFAFNet 256x192 train step with bfloat16 compute, lowered and compiled for the
8 fake CPU devices of tests/conftest.py (2 images per device), through the same code as
benchmarks/pod_plan.py. The compiled per-device HLO shows the all-reduces, the
input-output aliases and the absence of host transfers; the compute dtype is read from
the lowered StableHLO, the program a GPU or TPU compiler receives, because XLA:CPU
upcasts bfloat16 convolutions to float32 (measured: all 324 compiled convolutions of
this program are f32, fed by bf16 -> f32 converts).
"""

import collections
import importlib.util

import jax
import pytest
from conftest import REPO

DEVICES = 8
BATCH_PER_DEVICE = 2


def _pod_plan():
    spec = importlib.util.spec_from_file_location("pod_plan", REPO / "benchmarks" / "pod_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pod_program():
    """(program facts, abstract state) of the compiled R50 pod step (~75 s on 2 cores)."""
    assert jax.device_count() == DEVICES, "tests run with 8 fake CPU devices (tests/conftest.py)"
    pod_plan = _pod_plan()
    config = pod_plan.pod_config("efafnet", 50, (256, 192))
    lowered, state = pod_plan.lower_train_step(config, pod_plan.data_mesh(), BATCH_PER_DEVICE)
    compiled = lowered.compile()
    return pod_plan.program_facts(lowered.as_text(), compiled.as_text()), state


def test_gradients_are_all_reduced_over_the_data_axis(pod_program):
    facts, state = pod_program
    # Measured with jax 0.10.2 on XLA:CPU: 329 all-reduces carrying 728 arrays, the
    # forward pass's global-batch BatchNorm statistics (85 layers x mean, mean square),
    # then the 387 parameter gradients, 170 BatchNorm gradient sums and the loss; XLA's
    # combiner packs 497 of them into 98 tuple all-reduces. The count follows the
    # combiner, so it is documented here, not pinned.
    assert facts["all_reduces"] > 0
    assert facts["all_reduce_group_sizes"] == [DEVICES]
    # Every parameter's gradient is all-reduced: each parameter shape is among the
    # all-reduced arrays at least as often as the parameters have it.
    params = collections.Counter(leaf.shape for leaf in jax.tree_util.tree_leaves(state.params))
    missing = {
        shape: count - facts["all_reduced_shapes"][shape]
        for shape, count in params.items()
        if facts["all_reduced_shapes"][shape] < count
    }
    assert not missing, f"parameter shapes without an all-reduced gradient: {missing}"


def test_convolutions_compute_in_bfloat16_with_float32_parameters(pod_program):
    facts, state = pod_program
    (operand_dtypes,) = facts["conv_operand_dtypes"]
    assert operand_dtypes == ("bf16", "bf16"), facts["conv_operand_dtypes"]
    # The arguments are the flattened (state, batch): the parameters are float32, and no
    # argument (optimiser state, BatchNorm statistics, batch) is bfloat16.
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
    assert len(facts["argument_dtypes"]) == len(paths) + 3  # image, target, target_weight
    state_dtypes = facts["argument_dtypes"][: len(paths)]
    param_dtypes = {
        dtype for path, dtype in zip(paths, state_dtypes, strict=True) if path.startswith(".params")
    }
    assert param_dtypes == {"f32"}
    assert set(facts["argument_dtypes"]) <= {"f32", "i32", "ui8"}, facts["argument_dtypes"]


def test_no_host_callbacks_infeed_or_outfeed(pod_program):
    facts, _ = pod_program
    assert facts["host_transfers"] == []
    # Custom calls present: TopK (the OHKM loss); a jax.debug.callback or pure_callback
    # would add xla_ffi_python_cpu_callback (xla_python_*_callback in older jaxlibs).
    callbacks = [t for t in facts["custom_call_targets"] if "callback" in t.lower()]
    assert not callbacks, callbacks


def test_state_is_donated(pod_program):
    facts, state = pod_program
    # Each state leaf (entry parameters 0..n-1) is aliased to its updated output.
    assert facts["aliased_parameters"] == list(range(len(jax.tree_util.tree_leaves(state))))
