"""Parameter and multiply-add counts: hand-derived cases and the paper's figures."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import CONFIG_DIR, load_test_config, run_json_command

from efafnet_jax.models.model_cost import count_macs
from efafnet_jax.models.summary import summarize


def test_conv_macs_hand_count():
    layer = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)
    x = jnp.zeros((1, 10, 12, 4))
    variables = layer.init(jax.random.key(0), x)
    # 5x6 output positions x 8 filters x 3x3x4 taps.
    assert count_macs(layer.apply, variables, x) == 5 * 6 * 8 * 9 * 4


def test_transposed_conv_counts_no_inserted_zeros():
    layer = nn.ConvTranspose(
        8, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True, use_bias=False
    )
    x = jnp.zeros((1, 6, 5, 4))
    variables = layer.init(jax.random.key(0), x)
    assert layer.apply(variables, x).shape == (1, 12, 10, 8)
    # Each input pixel scatters a 4x4 kernel: 6x5 inputs x 16 taps x 4 x 8.
    assert count_macs(layer.apply, variables, x) == 6 * 5 * 16 * 4 * 8


def test_dense_macs_hand_count():
    layer = nn.Dense(7)
    x = jnp.zeros((3, 5))
    variables = layer.init(jax.random.key(0), x)
    assert count_macs(layer.apply, variables, x) == 3 * 5 * 7


def test_simple_baseline_r50_matches_published_count():
    result = summarize(load_test_config(f"{CONFIG_DIR / 'coco.py'}:sbn,r50,256x192"))
    assert result["params"] == 33_999_697  # SimpleBaseline's 34.0M
    assert result["macs"] == pytest.approx(5.43e9, rel=2e-3)
    assert result["flops"] == 2 * result["macs"]


def test_sbn_fasm_r50_is_within_three_percent_of_table_viii():
    result = summarize(load_test_config(f"{CONFIG_DIR / 'coco.py'}:sbn_fasm,r50,256x192"))
    assert abs(result["params"] - 37.0e6) / 37.0e6 <= 0.03


@pytest.mark.slow  # a command
def test_summary_command_json_is_the_last_line():
    last = run_json_command("efafnet_jax.models.summary", "--config", "tiny:sbn_duc,128x96")
    assert set(last) >= {"params", "macs", "flops"}
    direct = summarize(load_test_config(f"{CONFIG_DIR / 'tiny.py'}:sbn_duc,128x96"))
    assert last["params"] == direct["params"] and last["macs"] == direct["macs"]
