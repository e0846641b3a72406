"""EFAFNet model parts; `create_model(config.model)` builds the network."""

from efafnet_jax.models.efafnet import PoseNet, create_model

__all__ = ["PoseNet", "create_model"]
