"""PyTorch interop: official/torchvision-layout ResNet state dicts <-> our Flax variables.

Key names follow the official ``resnet.py`` (= torchvision's): ``conv1.weight``,
``bn1.{weight,bias,running_mean,running_var}``, ``layer1.0.conv1.weight``,
``layer1.0.downsample.{0,1}.*``. Our module names are those keys with ``_`` for ``.``
(``layer1_0_downsample_0``), so conversion is a rename plus a layout change: conv kernels
are ``[out, in, *spatial]`` in PyTorch and ``[*spatial, in, out]`` in Flax. BatchNorm running
statistics are used as stored (both frameworks normalise with them in eval mode).
torch is imported only to read ``.pth`` files; safetensors files need no torch.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Prefixes of full official checkpoints (DDP-wrapped VICReg) and of our own exports.
STRIP_PREFIXES = ("module.backbone.", "backbone.", "module.")
IGNORED_SUFFIXES = ("num_batches_tracked",)
IGNORED_PREFIXES = ("fc.", "module.projector.", "projector.")
# (Flax collection, Flax leaf) <-> PyTorch parameter/buffer suffix.
BN_FIELDS = (("params", "scale", "weight"), ("params", "bias", "bias"),
             ("batch_stats", "mean", "running_mean"), ("batch_stats", "var", "running_var"))


def _torch_module_name(flax_module: str) -> str:
  return flax_module.replace("_", ".")


def _conv_to_flax(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (*range(2, w.ndim), 1, 0))


def _conv_to_torch(w: np.ndarray) -> np.ndarray:
  n = w.ndim
  return np.transpose(w, (n - 1, n - 2, *range(n - 2)))


def _clean(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops DDP/VICReg prefixes, BN counters and any classifier head."""
  out = {}
  for key, value in state_dict.items():
    if key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES):
      continue
    for prefix in STRIP_PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
        break
    out[key] = np.asarray(value)
  return out


def template_variables(backbone, in_channels: int = 3) -> dict:
  """Shapes of ``backbone``'s variables (no compute), to convert into."""
  dummy = jnp.zeros((1,) + (64,) * backbone.spatial_dims + (in_channels,))
  return jax.eval_shape(lambda: backbone.init(jax.random.key(0), dummy, train=False))


def torch_to_flax(state_dict: Mapping[str, np.ndarray], backbone) -> dict:
  """Converts an official/torchvision ResNet state dict to ``backbone``'s Flax variables.

  Args:
    state_dict: names -> arrays (numpy or torch tensors converted with ``.numpy()``); the
      ``module.backbone.`` prefix of official full checkpoints is accepted.
    backbone: the :class:`vicreg_jax.models.ResNet` the weights are for.
  Returns:
    ``{"params": ..., "batch_stats": ...}`` as float32 numpy arrays.
  Raises:
    ValueError naming missing, unexpected or mis-shaped keys.
  """
  weights = _clean(state_dict)
  in_channels = weights["conv1.weight"].shape[1] if "conv1.weight" in weights else 3
  template = template_variables(backbone, in_channels)
  flat = traverse_util.flatten_dict(template)
  out, used, problems = {}, set(), []
  for path, leaf in flat.items():
    collection, module, field = path[0], path[1], path[-1]
    if field == "kernel":
      key, convert = f"{_torch_module_name(module)}.weight", _conv_to_flax
    else:
      suffix = {f: t for c, f, t in BN_FIELDS}[field]
      key, convert = f"{_torch_module_name(module)}.{suffix}", np.asarray
    if key not in weights:
      problems.append(f"missing {key}")
      continue
    value = convert(weights[key]).astype(np.float32)
    if value.shape != leaf.shape:
      problems.append(f"{key}: shape {weights[key].shape} does not fit {leaf.shape}")
    out[path] = value
    used.add(key)
  unexpected = sorted(set(weights) - used)
  problems += [f"unexpected {k}" for k in unexpected]
  if problems:
    raise ValueError(
        f"State dict does not match {describe(backbone)}: {'; '.join(problems[:6])}"
        f"{' ...' if len(problems) > 6 else ''}. Check arch, width_multiplier, base_width and "
        "small_stem (e.g. the released resnet50.pth is arch='resnet50', width_multiplier=1).")
  return traverse_util.unflatten_dict(out)


def flax_to_torch(variables: Mapping) -> dict[str, np.ndarray]:
  """Our ResNet variables -> a torchvision-layout state dict (numpy), BN counters included."""
  params = traverse_util.flatten_dict(jax.device_get(dict(variables["params"])))
  stats = traverse_util.flatten_dict(jax.device_get(dict(variables.get("batch_stats", {}))))
  out = {}
  for (module, field), value in params.items():
    name = _torch_module_name(module)
    value = np.asarray(value, np.float32)
    if field == "kernel":
      out[f"{name}.weight"] = np.ascontiguousarray(_conv_to_torch(value))
    else:
      out[f"{name}.{'weight' if field == 'scale' else 'bias'}"] = value
  for (module, field), value in stats.items():
    name = _torch_module_name(module)
    out[f"{name}.{'running_mean' if field == 'mean' else 'running_var'}"] = np.asarray(
        value, np.float32)
    out[f"{name}.num_batches_tracked"] = np.zeros((), np.int64)
  return out


def describe(backbone) -> str:
  return (f"ResNet(stages={tuple(backbone.stage_sizes)}, bottleneck={backbone.bottleneck}, "
          f"width_multiplier={backbone.width_multiplier}, base_width={backbone.base_width}, "
          f"small_stem={backbone.small_stem})")


def save_safetensors(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes a state dict that ``safetensors.torch.load_file`` reads without our package."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, path)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads ``.safetensors`` (no torch needed) or ``.pth``/``.pt`` (needs torch) to numpy.

  Full official checkpoints (a dict with a ``model`` entry) are unwrapped.
  """
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise ImportError(f"Reading {path} needs PyTorch (pip install torch); or convert it to "
                      ".safetensors first.") from err
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(obj, dict) and "model" in obj:
    obj = obj["model"]
  return {k: v.numpy() for k, v in obj.items() if hasattr(v, "numpy")}
