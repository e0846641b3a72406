"""The EFAFNet network in PyTorch, NCHW, with SimpleBaseline/torchvision key names.

State_dict keys: `conv1`, `bn1`, `layer1..4.N.{conv1..3, bn1..3, downsample.0/1}`
(torchvision Bottleneck), FAM as Res2Net's `convs.N` / `bns.N`, FSM as
`fsm.{cs_fc1, cs_fc2, lss_conv1, lss_conv2}`, `deconv_layers.N` and `final_layer`
(SimpleBaseline `pose_resnet`), `duc.conv`, `aux_conv2`. Built from the same
`config.model` as the flax model and written independently of it.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from efafnet_jax.interop.convert import flax_to_state_dict

EXPANSION = 4


class FeatureSelection(nn.Module):
    """CS (avg+max pooled MLP) and LSS (1x1 convs) selection, each x + w * x."""

    def __init__(
        self,
        channels: int,
        reduction: int,
        lss_hidden: int,
        lss_relu_before_sigmoid: bool,
        arrangement: str,
    ):
        super().__init__()
        self.cs_fc1 = nn.Linear(channels, max(channels // reduction, 1))
        self.cs_fc2 = nn.Linear(max(channels // reduction, 1), channels)
        self.lss_conv1 = nn.Conv2d(channels, lss_hidden, 1)
        self.lss_conv2 = nn.Conv2d(lss_hidden, 1, 1)
        self.relu_before_sigmoid = lss_relu_before_sigmoid
        self.arrangement = arrangement

    def channel_selection(self, x):
        pooled = x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
        alpha = torch.sigmoid(self.cs_fc2(F.relu(self.cs_fc1(pooled))))
        return x + alpha[:, :, None, None] * x

    def location_selection(self, x):
        logits = self.lss_conv2(F.relu(self.lss_conv1(x)))
        if self.relu_before_sigmoid:
            logits = F.relu(logits)
        return x + torch.sigmoid(logits) * x

    def forward(self, x):
        if self.arrangement == "parallel":
            return self.channel_selection(x) + self.location_selection(x)
        if self.arrangement == "cs_lss":
            return self.location_selection(self.channel_selection(x))
        return self.channel_selection(self.location_selection(x))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck, or Res2Net's Bottle2neck when `use_fam`; optional FSM."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        first_of_stage: bool,
        m: ml_collections.ConfigDict,
    ):
        super().__init__()
        out_channels = planes * EXPANSION
        self.use_fam = m.use_fam
        self.stride = stride
        self.first_of_stage = first_of_stage
        if m.use_fam:
            self.width = int(math.floor(planes * m.fam.base_width / 64.0))
            self.scale = m.fam.scale
            self.conv1 = nn.Conv2d(inplanes, self.width * self.scale, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(self.width * self.scale)
            self.convs = nn.ModuleList(
                nn.Conv2d(self.width, self.width, 3, stride, 1, bias=False)
                for _ in range(self.scale - 1)
            )
            self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(self.scale - 1))
            self.conv3 = nn.Conv2d(self.width * self.scale, out_channels, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.fsm = FeatureSelection(out_channels, **m.fsm.to_dict()) if m.use_fsm else None
        self.downsample = None
        if stride != 1 or inplanes != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def aggregate(self, x):
        spx = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        for i in range(self.scale - 1):
            sp = spx[i] if (i == 0 or self.first_of_stage) else outs[-1] + spx[i]
            outs.append(F.relu(self.bns[i](self.convs[i](sp))))
        last = spx[-1]
        if self.first_of_stage:
            last = F.avg_pool2d(last, 3, self.stride, 1)
        return torch.cat(outs + [last], 1)

    def forward(self, x):
        if self.use_fam:
            out = self.aggregate(x)
        else:
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.fsm is not None:
            out = self.fsm(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class DUC(nn.Module):
    """Conv to r^2 * C channels, then PixelShuffle(r)."""

    def __init__(self, in_channels: int, out_channels: int, upscale: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * upscale**2, kernel, 1, kernel // 2)
        self.shuffle = nn.PixelShuffle(upscale)

    def forward(self, x):
        return self.shuffle(self.conv(x))


class TorchPoseNet(nn.Module):
    """PyTorch twin of `efafnet_jax.models.PoseNet`: normalised NCHW in, NCHW heatmaps out."""

    def __init__(self, m: ml_collections.ConfigDict):
        super().__init__()
        self.head = m.head
        self.use_fusion = m.use_fusion
        self.aux_supervision = m.fusion.aux_supervision
        self.conv1 = nn.Conv2d(3, m.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(m.stem_width)
        inplanes = m.stem_width
        for i, num_blocks in enumerate(m.stage_blocks):
            planes = m.width * 2**i
            blocks = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck(inplanes, planes, stride, j == 0, m))
                inplanes = planes * EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        conv2_channels = m.width * EXPANSION
        if m.head == "deconv":
            layers, channels = [], inplanes
            padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[m.deconv.kernel]
            for _ in range(m.deconv.num_layers):
                layers += [
                    nn.ConvTranspose2d(
                        channels,
                        m.deconv.channels,
                        m.deconv.kernel,
                        2,
                        padding,
                        output_padding,
                        bias=False,
                    ),
                    nn.BatchNorm2d(m.deconv.channels),
                    nn.ReLU(inplace=True),
                ]
                channels = m.deconv.channels
            self.deconv_layers = nn.Sequential(*layers)
            head_channels = m.deconv.channels
        else:
            self.duc = DUC(inplanes, m.num_joints, m.duc.upscale, m.duc.kernel)
            head_channels = m.num_joints
        if m.head == "deconv" or m.use_fusion:
            in_channels = head_channels + (conv2_channels if m.use_fusion else 0)
            self.final_layer = nn.Conv2d(
                in_channels, m.num_joints, m.final_kernel, 1, m.final_kernel // 2
            )
        if self.aux_supervision:
            self.aux_conv2 = nn.Conv2d(conv2_channels, m.num_joints, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """torchvision ResNet init for convs and BN; SimpleBaseline's std 0.001 for the head."""
        for name, module in self.named_modules():
            head = name.startswith(("deconv_layers", "final_layer", "duc", "aux_conv2"))
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)) and head:
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        """Returns heatmaps; with aux supervision also sets `self.aux_heatmaps`."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        conv2 = self.layer1(x)
        conv5 = self.layer4(self.layer3(self.layer2(conv2)))
        features = self.deconv_layers(conv5) if self.head == "deconv" else self.duc(conv5)
        if self.use_fusion:
            features = torch.cat([features, conv2], 1)
        if self.aux_supervision:
            self.aux_heatmaps = self.aux_conv2(conv2)
        if self.head == "duc" and not self.use_fusion:
            return features
        return self.final_layer(features)


def torch_model(variables: dict, model_config: ml_collections.ConfigDict) -> TorchPoseNet:
    """The PyTorch reference holding these flax variables (a strict load)."""
    model = TorchPoseNet(model_config)
    state = flax_to_state_dict(variables)
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True
    )
    return model
