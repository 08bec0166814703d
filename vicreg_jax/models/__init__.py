"""Encoders and the VICReg joint-embedding model (Flax Linen)."""

from vicreg_jax.models.expander import Expander, parse_spec
from vicreg_jax.models.resnet import ResNet, representation_dim, resnet
from vicreg_jax.models.vicreg import (VICReg, backbone_options, backbone_variables,
                                      create_backbone, create_model, in_channels)

__all__ = ["Expander", "ResNet", "VICReg", "backbone_options", "backbone_variables",
           "create_backbone", "create_model", "in_channels", "parse_spec", "representation_dim", "resnet"]
