"""The joint-embedding VICReg model: two branches (shared or separate), each view on its own.

Parameter tree: ``backbone`` and ``expander`` (branch a, and branch b when shared); with
``shared_branches=False`` branch b adds ``backbone_b`` and ``expander_b``, which may have
another architecture, stem and input rank (e.g. a 1-D ResNet-18 on raw audio beside a 2-D
ResNet-18 on spectrograms). Each view is a separate forward pass, so BatchNorm statistics
are per view (and the running averages update once per view), as in the official code.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vicreg_jax.models.expander import Expander
from vicreg_jax.models.resnet import ResNet, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
BACKBONE_KEYS = ("arch", "width_multiplier", "base_width", "small_stem", "spatial_dims")


class VICReg(nn.Module):
  """Returns ``representation_{a,b}`` and ``embedding_{a,b}``, float32 [n, dim] each."""
  backbone: ResNet
  expander: Expander
  backbone_b: ResNet | None = None
  expander_b: Expander | None = None

  def _branch(self, branch: str):
    if branch == "b" and self.backbone_b is not None:
      return self.backbone_b, self.expander_b
    return self.backbone, self.expander

  def __call__(self, view_a, view_b, *, train: bool) -> dict[str, Any]:
    out = {}
    for branch, view in (("a", view_a), ("b", view_b)):
      backbone, expander = self._branch(branch)
      representation = backbone(view, train=train)
      out[f"representation_{branch}"] = representation
      out[f"embedding_{branch}"] = expander(representation, train=train)
    return out

  def encode(self, x, *, train: bool = False, branch: str = "a"):
    """Representation of one branch's encoder (for evaluation): float32 [n, dim]."""
    return self._branch(branch)[0](x, train=train)


def _dtype(model_config: ml_collections.ConfigDict):
  if model_config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_config.dtype!r}; use one of {sorted(DTYPES)}.")
  return DTYPES[model_config.dtype]


def backbone_options(model_config: ml_collections.ConfigDict, branch: str = "a") -> dict:
  """Constructor options of a branch's ResNet (branch b may override branch a's)."""
  options = {k: model_config[k] for k in BACKBONE_KEYS if k in model_config}
  if branch == "b" and not model_config.shared_branches and "branch_b" in model_config:
    options.update(dict(model_config.branch_b))
  return options


def create_backbone(model_config: ml_collections.ConfigDict, branch: str = "a") -> ResNet:
  """The ResNet of ``branch`` ("a" or "b") described by ``config.model``."""
  return resnet(**backbone_options(model_config, branch), dtype=_dtype(model_config))


def create_model(model_config: ml_collections.ConfigDict) -> VICReg:
  """The VICReg module described by ``config.model``."""
  dtype = _dtype(model_config)
  backbone = create_backbone(model_config, "a")
  expander = Expander(model_config.expander, dtype=dtype)
  if model_config.shared_branches:
    return VICReg(backbone=backbone, expander=expander)
  return VICReg(backbone=backbone, expander=expander,
                backbone_b=create_backbone(model_config, "b"),
                expander_b=Expander(model_config.expander, dtype=dtype))


def backbone_variables(variables: dict, branch: str = "a") -> dict:
  """The ``{'params', 'batch_stats'}`` of one branch's ResNet, from the VICReg variables."""
  name = "backbone_b" if branch == "b" and "backbone_b" in variables["params"] else "backbone"
  return {collection: variables[collection][name]
          for collection in ("params", "batch_stats") if collection in variables}
