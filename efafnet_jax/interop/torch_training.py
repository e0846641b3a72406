"""SimpleBaseline's training recipe in PyTorch, the reference for `compare_training`.

Written after microsoft/human-pose-estimation.pytorch (and HRNet's identical copy):
`lib/core/loss.py` (`JointsMSELoss`, `JointsOHKMMSELoss`), `lib/core/function.py`
`train()` and `tools/train.py` (`torch.optim.Adam(params, lr)`, no weight decay;
`MultiStepLR(milestones=LR_STEP, gamma=LR_FACTOR)` stepped once per epoch). Independent of
the flax training code, which it checks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn


class JointsMSELoss(nn.Module):
    """Mean over joints of 0.5 x MSE (over batch and pixels) of the weighted maps."""

    def forward(self, output, target, target_weight):
        batch, joints = output.shape[:2]
        pred = output.reshape(batch, joints, -1)
        gt = target.reshape(batch, joints, -1)
        loss = 0.0
        for k in range(joints):
            w = target_weight[:, k : k + 1]
            loss = loss + 0.5 * nn.functional.mse_loss(pred[:, k] * w, gt[:, k] * w)
        return loss / joints


class JointsOHKMMSELoss(nn.Module):
    """Per sample, the mean of its `top_k` largest joint losses; then the batch mean."""

    def __init__(self, top_k: int = 8):
        super().__init__()
        self.top_k = top_k

    def forward(self, output, target, target_weight):
        batch, joints = output.shape[:2]
        pred = output.reshape(batch, joints, -1)
        gt = target.reshape(batch, joints, -1)
        per_joint = []
        for k in range(joints):
            w = target_weight[:, k : k + 1]
            squared = nn.functional.mse_loss(pred[:, k] * w, gt[:, k] * w, reduction="none")
            per_joint.append(0.5 * squared.mean(dim=1, keepdim=True))
        losses = torch.cat(per_joint, dim=1)
        total = 0.0
        for sample in losses:
            top, _ = torch.topk(sample, k=self.top_k, dim=0, sorted=False)
            total = total + top.sum() / self.top_k
        return total / batch


@dataclasses.dataclass
class ReferenceRecipe:
    """The PyTorch side's choices. Defaults are SimpleBaseline's; a test changes one to
    show that `compare_training` detects it."""

    learning_rate: float
    milestones: tuple[int, ...]  # epochs at which the lr is multiplied by `gamma`
    gamma: float
    steps_per_epoch: int
    loss: str  # "mse" or "ohkm"
    ohkm_top_k: int = 8
    aux_loss_weight: float = 1.0
    weight_decay: float = 0.0
    bn_momentum: float = 0.1


def _criterion(recipe: ReferenceRecipe) -> nn.Module:
    if recipe.loss == "mse":
        return JointsMSELoss()
    if recipe.loss == "ohkm":
        return JointsOHKMMSELoss(recipe.ohkm_top_k)
    raise ValueError(f"the reference recipe has the losses 'mse' and 'ohkm', not {recipe.loss!r}")


def train_reference(
    model: nn.Module, batches: list[dict], recipe: ReferenceRecipe
) -> tuple[list[float], list[float], torch.optim.Optimizer]:
    """SimpleBaseline's `train()` over `batches` (normalised NHWC `input`, NHWC `target`,
    `target_weight` [B, K], NumPy): (loss per step, lr per step, the optimiser)."""
    dtype = next(model.parameters()).dtype
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = recipe.bn_momentum
    criterion = _criterion(recipe)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, list(recipe.milestones), recipe.gamma
    )
    losses, lrs = [], []
    model.train()
    for i, batch in enumerate(batches):
        x = torch.from_numpy(np.ascontiguousarray(batch["input"])).permute(0, 3, 1, 2).to(dtype)
        target = torch.from_numpy(batch["target"]).permute(0, 3, 1, 2).to(dtype)
        weight = torch.from_numpy(batch["target_weight"]).to(dtype)
        output = model(x)
        loss = criterion(output, target, weight)
        if getattr(model, "aux_supervision", False):
            loss = loss + recipe.aux_loss_weight * criterion(model.aux_heatmaps, target, weight)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (i + 1) % recipe.steps_per_epoch == 0:
            scheduler.step()  # the end of an epoch
    return losses, lrs, optimizer
