"""Commands accept flag names with dashes, as the issues spell them."""

from efafnet_jax.cli import _underscored


def test_dashed_flag_names_become_absl_names():
    assert _underscored("--torch-checkpoint=/a-b/c.pth") == "--torch_checkpoint=/a-b/c.pth"
    assert _underscored("--torch-checkpoint") == "--torch_checkpoint"
    assert _underscored("--float64-truth") == "--float64_truth"


def test_values_positionals_and_config_overrides_are_untouched():
    assert _underscored("/path/with-dash.pth") == "/path/with-dash.pth"
    assert _underscored("-v") == "-v"
    assert _underscored("--config.model.duc.kernel=1") == "--config.model.duc.kernel=1"
    assert _underscored("--config=configs/coco.py:sbn_fasm,r50") == (
        "--config=configs/coco.py:sbn_fasm,r50"
    )
