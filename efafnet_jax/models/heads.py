"""Decoders from the stride-32 features to stride-4 maps: deconvolutions and DUC."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.layers import ConvTranspose, LayerSettings, batch_norm, conv, head_normal

# SimpleBaseline pose_resnet.py `_get_deconv_cfg`: kernel -> (padding, output_padding).
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


def depth_to_space(x: jnp.ndarray, r: int) -> jnp.ndarray:
    """[B, H, W, C*r*r] -> [B, H*r, W*r, C] in torch.nn.PixelShuffle's channel order.

    Input channel c*r*r + sy*r + sx lands at output pixel (h*r + sy, w*r + sx),
    channel c (TF's depth_to_space would read channel (sy*r + sx)*C + c instead).
    """
    b, h, w, c = x.shape
    if c % (r * r):
        raise ValueError(f"depth_to_space: {c} channels are not divisible by r^2 = {r * r}")
    x = x.reshape(b, h, w, c // (r * r), r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c // (r * r))


class DeconvHead(nn.Module):
    """SimpleBaseline's decoder: `num_layers` x (ConvTranspose stride 2, BN, ReLU).

    Layers are named `deconv_layers_{3i}` / `deconv_layers_{3i+1}` after the
    indices of the PyTorch `nn.Sequential` (ConvT, BN, ReLU per layer).
    """

    num_layers: int = 3
    channels: int = 256
    kernel: int = 4
    layers: LayerSettings = LayerSettings()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.kernel not in _DECONV_PADDING:
            raise ValueError(f"model.deconv.kernel must be one of {sorted(_DECONV_PADDING)}")
        padding, output_padding = _DECONV_PADDING[self.kernel]
        # torch ConvTranspose2d(k, s=2, p, op) == dilated conv padded (k-1-p, k-1-p+op).
        lo = self.kernel - 1 - padding
        pads = ((lo, lo + output_padding), (lo, lo + output_padding))
        for i in range(self.num_layers):
            x = ConvTranspose(
                self.channels,
                self.kernel,
                2,
                pads,
                kernel_init=head_normal,
                dtype=self.layers.dtype,
                param_dtype=self.layers.param_dtype,
                impl=self.layers.conv_impl,
                name=f"deconv_layers_{3 * i}",
            )(x)
            x = batch_norm(train, layers=self.layers, name=f"deconv_layers_{3 * i + 1}")(x)
            x = nn.relu(x)
        return x


class DUCHead(nn.Module):
    """Dense Upsampling Convolution (section III-D): conv to r^2*C, depth-to-space."""

    out_channels: int
    upscale: int = 8
    kernel: int = 3
    layers: LayerSettings = LayerSettings()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = conv(
            self.out_channels * self.upscale**2,
            self.kernel,
            use_bias=True,
            kernel_init=head_normal,
            layers=self.layers,
            name="conv",
        )(x)
        return depth_to_space(x, self.upscale)
