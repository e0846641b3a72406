"""Training parity with SimpleBaseline's PyTorch recipe: 10 steps in float64, every Table VI
row at tiny widths, the lr dropping twice inside the run; and controls that show the
comparison fails when the recipe differs by one choice on one side."""

import pytest
from conftest import CONFIG_DIR, load_test_config, run_json_command

from efafnet_jax.config import VARIANTS
from efafnet_jax.interop import compare_training as ct

TOLERANCE = 1e-9
CONTROLS = {
    "weight decay 1e-4": dict(weight_decay=1e-4),
    "BatchNorm momentum 0.9": dict(bn_momentum=0.9),
    "lr boundaries one epoch late": dict(milestones=tuple(e + 1 for e in ct.DECAY_EPOCHS)),
}


def _case(variant: str, aux: bool = False) -> ct.TrainingCase:
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{variant},64x64")
    config.model.fusion.aux_supervision = aux
    return ct.training_case(config, steps=10, batch=2, seed=0, dtype="float64")


def _errors(case: ct.TrainingCase, flax_run: dict, torch_run: dict) -> dict[str, float]:
    names = {name for name, _ in case.initial.named_parameters()}
    return ct.run_errors(flax_run, torch_run, names)


@pytest.mark.parametrize(
    "variant, aux",
    [(v, False) for v in VARIANTS] + [("efafnet", True)],
    ids=[*VARIANTS, "efafnet_aux"],
)
def test_ten_float64_steps_match_the_pytorch_recipe(variant, aux):
    case = _case(variant, aux)
    assert case.recipe.loss == ("mse" if variant == "sbn" else "ohkm")
    flax_run, torch_run = ct.flax_side(case), ct.torch_side(case)
    # The schedule drops inside the run, identically on both sides.
    assert flax_run["lrs"] == pytest.approx(torch_run["lrs"], rel=1e-12)
    assert len(set(torch_run["lrs"])) == 3
    errors = _errors(case, flax_run, torch_run)
    assert max(errors.values()) <= TOLERANCE, errors
    if variant in ("sbn", "efafnet") and (variant == "sbn" or aux):
        for what, changes in CONTROLS.items():
            control = _errors(case, flax_run, ct.torch_side(case, **changes))
            assert max(control.values()) > 1e3 * TOLERANCE, (what, control)


def test_command_line_json_in_float32_reports_distances_from_float64():
    report = run_json_command(
        "efafnet_jax.interop.compare_training",
        "--config",
        "configs/tiny.py:sbn,64x64",
        "--steps",
        "3",
        "--batch",
        "2",
    )
    assert report["steps"] == 3 and report["dtype"] == "float32"
    assert report["lr_jax"] == pytest.approx(report["lr_torch"]) == [1e-3, 1e-4, 1e-5]
    for quantity in ct.QUANTITIES:
        # float32 rounding, not agreement to float64 precision; both sides measured.
        assert 0 < report[f"max_rel_err_{quantity}"] < 1e-1, quantity
        for side in ("jax", "torch"):
            assert 0 < report[f"{side}_vs_float64_rel_err_{quantity}"] < 1e-1, (side, quantity)
    assert report["max_rel_err_loss"] < 1e-5
    for quantity in ct.QUANTITIES:  # the float32 criterion: at most 2x PyTorch's (+1e-6)
        jax_distance = report[f"jax_vs_float64_rel_err_{quantity}"]
        assert jax_distance <= 2 * report[f"torch_vs_float64_rel_err_{quantity}"] + 1e-6, (
            quantity,
            report,
        )
