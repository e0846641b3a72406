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
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, every_xla_pass
from jax.experimental import io_callback

from efafnet_jax.sharding import batch_sharded, data_mesh, replicated

DEVICES = 8
BATCH_PER_DEVICE = 2


def _pod_plan():
    spec = importlib.util.spec_from_file_location("pod_plan", REPO / "benchmarks" / "pod_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POD_PLAN = _pod_plan()


@pytest.fixture(scope="module")
def pod_step():
    """(lowered R50 pod step, its abstract state): traced and lowered only (~8 s)."""
    assert jax.device_count() == DEVICES, "tests run with 8 fake CPU devices (tests/conftest.py)"
    config = POD_PLAN.pod_config("efafnet", 50, (256, 192))
    return POD_PLAN.lower_train_step(config, data_mesh(), BATCH_PER_DEVICE)


@pytest.fixture(scope="module")
def pod_program(pod_step):
    """(program facts, abstract state) of the pod step compiled (~90 s on 2 cores)."""
    lowered, state = pod_step
    with every_xla_pass():  # as a pod compiles it (the marker's fixture runs after this)
        compiled = lowered.compile()
    return POD_PLAN.program_facts(lowered.as_text(), compiled.as_text()), state


def unreduced_arrays(facts: dict, state) -> dict:
    """{shape: how many all-reduced arrays of that shape are missing}. The step reduces
    each parameter's gradient, and per BatchNorm statistic (mean, variance) two arrays of
    its shape: the forward pass's global-batch mean or mean square, and its gradient in
    the backward pass. Counting the statistics keeps a missing BatchNorm-gradient reduce
    from hiding behind them: scale, bias and both statistics share a shape."""
    needed = collections.Counter(leaf.shape for leaf in jax.tree_util.tree_leaves(state.params))
    for leaf in jax.tree_util.tree_leaves(state.batch_stats):
        needed[leaf.shape] += 2
    reduced = facts["all_reduced_shapes"]
    return {shape: n - reduced[shape] for shape, n in needed.items() if reduced[shape] < n}


def host_traffic(facts: dict) -> list[str]:
    """Host transfers (infeed, outfeed, send, recv) and host callbacks in a program. A
    jax.debug.callback, io_callback or pure_callback compiles to a custom call named
    xla_ffi_python_cpu_callback (xla_python_*_callback in older jaxlibs)."""
    callbacks = [t for t in facts["custom_call_targets"] if "callback" in t.lower()]
    return facts["host_transfers"] + callbacks


@pytest.mark.slow
@pytest.mark.optimized
def test_gradients_are_all_reduced_over_the_data_axis(pod_program):
    facts, state = pod_program
    # Measured with jax 0.10.2 on XLA:CPU: 329 all-reduces carrying 728 arrays, the
    # forward pass's global-batch BatchNorm statistics (85 layers x mean, mean square),
    # then the 387 parameter gradients, 170 BatchNorm gradient sums and the loss; XLA's
    # combiner packs 497 of them into 98 tuple all-reduces. The count follows the
    # combiner, so it is documented here, not pinned.
    assert facts["all_reduces"] > 0
    assert facts["all_reduce_group_sizes"] == [DEVICES]
    assert not unreduced_arrays(facts, state), unreduced_arrays(facts, state)
    # Planted: one BatchNorm scale's gradient reduce fewer is caught, though the shape
    # still has more all-reduced arrays than parameters.
    shape = jax.tree_util.tree_leaves(state.batch_stats)[0].shape
    one_fewer = {**facts, "all_reduced_shapes": facts["all_reduced_shapes"].copy()}
    one_fewer["all_reduced_shapes"][shape] -= 1
    params = [leaf.shape for leaf in jax.tree_util.tree_leaves(state.params)]
    assert one_fewer["all_reduced_shapes"][shape] > params.count(shape)
    assert unreduced_arrays(one_fewer, state) == {shape: 1}


def test_convolutions_compute_in_bfloat16_with_float32_parameters(pod_step):
    lowered, state = pod_step
    # Read from the lowered module alone: no compiled module (~90 s) is needed.
    facts = POD_PLAN.program_facts(lowered.as_text(), compiled_text="HloModule not_compiled")
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


@pytest.mark.slow
@pytest.mark.optimized
def test_no_host_callbacks_infeed_or_outfeed(pod_program):
    facts, _ = pod_program
    # Custom calls present: TopK (the OHKM loss).
    assert host_traffic(facts) == [], facts["custom_call_targets"]


@pytest.mark.optimized
@pytest.mark.parametrize("plant", ["debug_callback", "io_callback"])
def test_a_host_callback_planted_in_a_step_is_caught(plant):
    """The control of the check above, on a step-shaped program compiled the same way
    (state donated, batch over 'data', a global reduction): recompiling the R50 step
    with a callback in it would cost another ~90 s."""
    mesh = data_mesh()
    rows, whole = batch_sharded(mesh), replicated(mesh)

    def step(weights, batch):
        loss = jnp.mean((batch @ weights) ** 2)
        if plant == "debug_callback":
            jax.debug.callback(lambda x: None, loss)
        else:
            loss = io_callback(lambda x: x, jax.ShapeDtypeStruct((), jnp.float32), loss)
        return weights - 0.1 * jax.grad(lambda w: jnp.mean((batch @ w) ** 2))(weights), loss

    weights = jax.ShapeDtypeStruct((4, 4), jnp.float32, sharding=whole)
    batch = jax.ShapeDtypeStruct((2 * DEVICES, 4), jnp.float32, sharding=rows)
    step = jax.jit(step, out_shardings=(whole, whole), donate_argnums=(0,))
    lowered = step.lower(weights, batch)
    compiled = lowered.compile()  # with every pass: the test is marked `optimized`
    facts = POD_PLAN.program_facts(lowered.as_text(), compiled.as_text())
    assert host_traffic(facts), facts["custom_call_targets"]
    assert facts["all_reduce_group_sizes"] == [DEVICES]  # the same SPMD program shape
    np.testing.assert_array_equal(facts["aliased_parameters"], [0])


@pytest.mark.slow
@pytest.mark.optimized
def test_state_is_donated(pod_program):
    facts, state = pod_program
    # Each state leaf (entry parameters 0..n-1) is aliased to its updated output.
    assert facts["aliased_parameters"] == list(range(len(jax.tree_util.tree_leaves(state))))
