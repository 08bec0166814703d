"""The joint-embedding VICReg model: two branches (shared or separate), BatchNorm per view.

Parameter tree (``variables["params"]`` and ``variables["batch_stats"]``):

* shared branches (default): ``backbone`` and ``expander``, used by both views;
* ``shared_branches=False``: ``backbone`` and ``expander`` are branch a's, ``backbone_b`` and
  ``expander_b`` branch b's. Branch b may have another architecture, width, stem and input
  rank (``config.model.branch_b``, e.g. a 1-D ResNet-18 on raw audio beside a 2-D ResNet-18
  on spectrograms); both expanders share the spec, so both embeddings have the same width.

Inside a backbone, module names are the PyTorch state-dict keys with ``_`` for ``.``
(``layer1_0_downsample_0``); inside an expander, ``linear{i}`` and ``bn{i}``.

With ``config.model.online_probe_classes`` > 0, ``params["online_probe"]`` (``kernel``,
``bias``) is the online linear probe; :func:`backbone_variables` (and so export and the
evaluations) never include it, and with 0 classes the tree is exactly the one above.

BatchNorm statistics are per view and the running averages update once per view (twice per
step when shared), as in the official code, which runs each view in its own forward pass.
``view_batching`` chooses how: ``"two_pass"`` runs each view through its branch in its own
pass; ``"one_pass"`` stacks the two views of shared branches into one batch of 2n (view-minor:
row 2i + v is example i of view v, so a data-sharded batch stays on its devices) with
:class:`~vicreg_jax.models.batchnorm.PerViewBatchNorm` in every BatchNorm, one set of kernels
for the same numbers (to float rounding); ``"auto"`` is one pass wherever it applies (shared
branches, views of one shape and dtype) and two passes otherwise.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vicreg_jax.models.expander import Expander
from vicreg_jax.models.resnet import ResNet, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
BACKBONE_KEYS = ("arch", "width_multiplier", "base_width", "small_stem", "spatial_dims")
BRANCHES = ("a", "b")
VIEW_BATCHING = ("auto", "one_pass", "two_pass")


def _check_branch(branch: str) -> None:
  if branch not in BRANCHES:
    raise ValueError(f"branch must be one of {BRANCHES}; got {branch!r}.")


class VICReg(nn.Module):
  """Encoder + expander per branch; ``backbone_b``/``expander_b`` set only when separate.

  Attributes:
    backbone: branch a's encoder (both branches' when ``backbone_b`` is None).
    expander: branch a's expander (both branches' when ``expander_b`` is None).
    backbone_b: branch b's own encoder, or None for shared branches.
    expander_b: branch b's own expander, or None for shared branches.
    probe_classes: > 0 adds the online probe ``online_probe``, a float32 linear layer on the
      stop-gradient representations of view a (Flax's default init: LeCun-normal kernel,
      zero bias; BYOL's monitor, it only reads the encoder).
    view_batching: ``"auto"``, ``"one_pass"`` or ``"two_pass"`` (module docstring).
  """
  backbone: ResNet
  expander: Expander
  backbone_b: ResNet | None = None
  expander_b: Expander | None = None
  probe_classes: int = 0
  view_batching: str = "auto"

  def setup(self):
    if self.probe_classes:
      self.online_probe = nn.Dense(self.probe_classes, dtype=jnp.float32)

  def _branch(self, branch: str) -> tuple[ResNet, Expander]:
    _check_branch(branch)
    if branch == "b" and self.backbone_b is not None:
      return self.backbone_b, self.expander_b
    return self.backbone, self.expander

  def one_pass(self, view_a, view_b) -> bool:
    """Whether :meth:`__call__` runs both views in one pass (ValueError when
    ``view_batching="one_pass"`` cannot apply)."""
    if self.view_batching not in VIEW_BATCHING:
      raise ValueError(f"view_batching must be one of {VIEW_BATCHING}; "
                       f"got {self.view_batching!r}.")
    if self.view_batching == "two_pass":
      return False
    reasons = []
    if self.backbone_b is not None:
      reasons.append("the branches are separate (shared_branches=False)")
    if (view_a.shape, view_a.dtype) != (view_b.shape, view_b.dtype):
      reasons.append(f"the views differ ({view_a.dtype}{list(view_a.shape)} vs "
                     f"{view_b.dtype}{list(view_b.shape)})")
    if reasons and self.view_batching == "one_pass":
      raise ValueError(f"view_batching='one_pass' needs shared branches and views of one "
                       f"shape and dtype, but {' and '.join(reasons)}; set "
                       "--config.model.view_batching=auto (or two_pass).")
    return not reasons

  def __call__(self, view_a, view_b, *, train: bool) -> dict[str, jnp.ndarray]:
    """Both views through their branches, in one pass or two (``view_batching``).

    Args:
      view_a: [n, h, w, c] (or [n, t, c] for a 1-D branch a).
      view_b: input of branch b, same batch size n.
      train: batch statistics (and running-average updates) instead of running averages.
    Returns:
      ``representation_a``, ``representation_b``: f32[n, representation_dim] (per branch);
      ``embedding_a``, ``embedding_b``: f32[n, expander output width];
      ``probe_logits``: f32[n, probe_classes], only with the online probe.
    """
    out = {}
    if self.one_pass(view_a, view_b):
      views = len(BRANCHES)
      stacked = jnp.stack([view_a, view_b], axis=1)  # [n, 2, ...]: view-minor rows
      representation = self.backbone(stacked.reshape((-1,) + view_a.shape[1:]), train=train,
                                     views=views)
      embedding = self.expander(representation, train=train, views=views)
      for name, value in (("representation", representation), ("embedding", embedding)):
        per_view = value.reshape((-1, views) + value.shape[1:])
        for v, branch in enumerate(BRANCHES):
          out[f"{name}_{branch}"] = per_view[:, v]
    else:
      for branch, view in zip(BRANCHES, (view_a, view_b)):
        backbone, expander = self._branch(branch)
        representation = backbone(view, train=train)
        out[f"representation_{branch}"] = representation
        out[f"embedding_{branch}"] = expander(representation, train=train)
    if self.probe_classes:
      # Stop-gradient: the probe learns from the encoder but never changes it.
      features = jax.lax.stop_gradient(out["representation_a"].astype(jnp.float32))
      out["probe_logits"] = self.online_probe(features)
    return out

  def encode(self, x, *, train: bool, branch: str = "a") -> jnp.ndarray:
    """Representation f32[n, representation_dim] of one branch's encoder (for evaluation)."""
    return self._branch(branch)[0](x, train=train)

  def represent_and_embed(self, x, *, train: bool, branch: str = "a"
                          ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(representation [n, representation_dim], embedding [n, expander width])`` of one
    branch (for the collapse diagnostics)."""
    backbone, expander = self._branch(branch)
    representation = backbone(x, train=train)
    return representation, expander(representation, train=train)


def _dtype(model_config: ml_collections.ConfigDict):
  if model_config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_config.dtype!r}; use one of {sorted(DTYPES)}.")
  return DTYPES[model_config.dtype]


def _branch_b_overrides(model_config: ml_collections.ConfigDict) -> dict:
  """The ``branch_b`` fields that are set (unset placeholders are None)."""
  if "branch_b" not in model_config:
    return {}
  overrides = {k: v for k, v in model_config.branch_b.items() if v is not None}
  unknown = sorted(set(overrides) - set(BACKBONE_KEYS))
  if unknown:
    raise ValueError(f"model.branch_b.{unknown[0]} is not a backbone option; "
                     f"branch b may override {BACKBONE_KEYS}.")
  if overrides and model_config.shared_branches:
    raise ValueError(f"model.branch_b sets {sorted(overrides)} but shared_branches=True; "
                     "set --config.model.shared_branches=False for a separate branch b.")
  return overrides


def backbone_options(model_config: ml_collections.ConfigDict, branch: str = "a") -> dict:
  """Constructor options of a branch's ResNet (branch b may override branch a's)."""
  _check_branch(branch)
  options = {k: model_config[k] for k in BACKBONE_KEYS if k in model_config}
  overrides = _branch_b_overrides(model_config)
  if branch == "b":
    options.update(overrides)
  return options


def create_backbone(model_config: ml_collections.ConfigDict, branch: str = "a") -> ResNet:
  """The ResNet of ``branch`` ("a" or "b") described by ``config.model``."""
  return resnet(**backbone_options(model_config, branch), dtype=_dtype(model_config))


def view_batching(model_config: ml_collections.ConfigDict) -> str:
  """``config.model.view_batching`` ("auto" for configs saved before the option existed);
  ValueError for an unknown value, or for "one_pass" with separate branches."""
  mode = model_config.get("view_batching", "auto")
  if mode not in VIEW_BATCHING:
    raise ValueError(f"--config.model.view_batching={mode!r}; use one of {VIEW_BATCHING}.")
  if mode == "one_pass" and not model_config.shared_branches:
    raise ValueError("--config.model.view_batching=one_pass needs shared branches; with "
                     "--config.model.shared_branches=False use auto or two_pass.")
  return mode


def create_model(model_config: ml_collections.ConfigDict) -> VICReg:
  """The VICReg module described by ``config.model``."""
  dtype = _dtype(model_config)
  branch_a = dict(backbone=create_backbone(model_config, "a"),
                  expander=Expander(model_config.expander, dtype=dtype),
                  probe_classes=model_config.get("online_probe_classes", 0),
                  view_batching=view_batching(model_config))
  if model_config.shared_branches:
    return VICReg(**branch_a)
  return VICReg(**branch_a, backbone_b=create_backbone(model_config, "b"),
                expander_b=Expander(model_config.expander, dtype=dtype))


def backbone_variables(variables: dict, branch: str = "a") -> dict:
  """The ``{'params', 'batch_stats'}`` of one branch's ResNet, from the VICReg variables."""
  _check_branch(branch)
  name = "backbone_b" if branch == "b" and "backbone_b" in variables["params"] else "backbone"
  return {collection: variables[collection][name]
          for collection in ("params", "batch_stats") if collection in variables}


def in_channels(backbone_vars: dict) -> int:
  """Input channels a backbone's variables take (its stem kernel): 3 for images, 1 for audio."""
  return int(backbone_vars["params"]["conv1"]["kernel"].shape[-2])
