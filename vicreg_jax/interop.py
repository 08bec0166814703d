"""PyTorch interop: official/torchvision-layout ResNet state dicts <-> our Flax variables.

Key names follow the official ``resnet.py`` (= torchvision's): ``conv1.weight``,
``bn1.{weight,bias,running_mean,running_var}``, ``layer1.0.conv1.weight``,
``layer1.0.downsample.{0,1}.*``. Our module names are those keys with ``_`` for ``.``
(``layer1_0_downsample_0``), so conversion is a rename plus a layout change: conv kernels
are ``[out, in, *spatial]`` in PyTorch and ``[*spatial, in, out]`` in Flax. BatchNorm running
statistics are used as stored (both frameworks normalise with them in eval mode). In train
mode the running variance differs slightly: PyTorch averages the unbiased batch variance,
Flax the biased one (a factor n/(n-1) per update, n = batch x positions; negligible at
VICReg's batch sizes). torch is imported only to read ``.pth`` files; safetensors files
need no torch.
"""

from __future__ import annotations

import os
import pickle
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from vicreg_jax import paths
from vicreg_jax.models.resnet import BOTTLENECK_ARCHS, STAGE_SIZES

# Prefixes of full official checkpoints (DDP-wrapped VICReg) and of backbone-only DDP dicts.
STRIP_PREFIXES = ("module.backbone.", "backbone.", "module.")
EXPANDER_PREFIXES = ("module.projector.", "projector.")  # official name of the expander
IGNORED_PREFIXES = ("fc.",)                               # torchvision classifier
IGNORED_SUFFIXES = ("num_batches_tracked",)
OFFICIAL_BASE_WIDTH = 64  # official stem width before the widen factor (resnet.py)
SMALL_STEM_KERNEL = 3     # our small_stem conv1 (the official stem is 7x7)
MAX_REPORTED = 6          # offending keys named in a mismatch error
# Flax leaf name -> PyTorch parameter/buffer suffix (conv kernels and BatchNorm fields).
TORCH_SUFFIX = {"kernel": "weight", "scale": "weight", "bias": "bias",
                "mean": "running_mean", "var": "running_var"}


def _torch_module_name(flax_module: str) -> str:
  return flax_module.replace("_", ".")


def _torch_key(flax_module: str, flax_field: str) -> str:
  """``("layer1_0_bn1", "mean")`` -> ``"layer1.0.bn1.running_mean"``."""
  return f"{_torch_module_name(flax_module)}.{TORCH_SUFFIX[flax_field]}"


def _conv_to_flax(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (*range(2, w.ndim), 1, 0))


def _conv_to_torch(w: np.ndarray) -> np.ndarray:
  n = w.ndim
  return np.transpose(w, (n - 1, n - 2, *range(n - 2)))


def _torch_shape(flax_field: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """PyTorch shape of a Flax leaf (for error messages)."""
  if flax_field != "kernel":
    return tuple(shape)
  return (shape[-1], shape[-2], *shape[:-2])


def _clean(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Backbone entries only: drops the expander, DDP/VICReg prefixes, BN counters and fc.

  Values pass through unconverted, so shape-only inputs (e.g. torch meta tensors) work.
  """
  out = {}
  for key, value in state_dict.items():
    if key.startswith(EXPANDER_PREFIXES):
      continue
    for prefix in STRIP_PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
        break
    if not (key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)):
      out[key] = value
  return out


def template_variables(backbone, in_channels: int = 3) -> dict:
  """Shapes of ``backbone``'s variables (no compute), to convert into."""
  dummy = jnp.zeros((1,) + (64,) * backbone.spatial_dims + (in_channels,))
  return jax.eval_shape(lambda: backbone.init(jax.random.key(0), dummy, train=False))


def infer_resnet_options(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The :func:`vicreg_jax.models.resnet` arguments a state dict looks like it was saved from.

  Reads the block counts per stage, the block type (``conv3`` = bottleneck), the stem kernel
  and width; e.g. the released ``resnet50.pth`` gives ``{"arch": "resnet50",
  "width_multiplier": 1, "base_width": 64, "small_stem": False, "spatial_dims": 2}``.
  Only shapes are read (torch meta tensors will do). Returns ``{}`` without ``conv1.weight``.
  """
  weights = _clean(state_dict)
  if "conv1.weight" not in weights:
    return {}
  stem = weights["conv1.weight"]
  stages = tuple(len({k.split(".")[1] for k in weights if k.startswith(f"layer{i}.")})
                 for i in range(1, 5))
  bottleneck = "layer1.0.conv3.weight" in weights
  arch = next((name for name, sizes in STAGE_SIZES.items()
               if sizes == stages and (name in BOTTLENECK_ARCHS) == bottleneck),
              f"unknown (blocks per stage {stages}, bottleneck={bottleneck})")
  width = stem.shape[0]
  multiplier = width // OFFICIAL_BASE_WIDTH if width % OFFICIAL_BASE_WIDTH == 0 else 1
  return dict(arch=arch, width_multiplier=multiplier, base_width=width // multiplier,
              small_stem=stem.shape[-1] == SMALL_STEM_KERNEL, spatial_dims=stem.ndim - 2)


def torch_to_flax(state_dict: Mapping[str, np.ndarray], backbone) -> dict:
  """Converts an official/torchvision ResNet state dict to ``backbone``'s Flax variables.

  Args:
    state_dict: names -> arrays (numpy, or CPU torch tensors); the ``module.backbone.``
      prefix of official full checkpoints is accepted, ``fc.*``, projector weights and
      ``num_batches_tracked`` are ignored.
    backbone: the :class:`vicreg_jax.models.ResNet` the weights are for.
  Returns:
    ``{"params": ..., "batch_stats": ...}`` as float32 numpy arrays.
  Raises:
    ValueError naming the first missing, unexpected or mis-shaped keys and the
    architecture the state dict suggests.
  """
  weights = _clean(state_dict)
  in_channels = weights["conv1.weight"].shape[1] if "conv1.weight" in weights else 3
  template = template_variables(backbone, in_channels)
  flat = traverse_util.flatten_dict({c: template[c] for c in ("params", "batch_stats")})
  out, missing, misshaped = {}, [], []
  for path, leaf in flat.items():
    key = _torch_key(path[1], path[-1])
    if key not in weights:
      missing.append(f"missing {key}")
      continue
    convert = _conv_to_flax if path[-1] == "kernel" else np.asarray
    out[path] = convert(np.asarray(weights[key])).astype(np.float32)
    if out[path].shape != leaf.shape:
      misshaped.append(f"{key} has shape {weights[key].shape}, expected "
                       f"{_torch_shape(path[-1], leaf.shape)}")
  used = {_torch_key(path[1], path[-1]) for path in flat}
  unexpected = [f"unexpected {k}" for k in sorted(set(weights) - used)]
  problems = missing + unexpected + misshaped
  if problems:
    more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
    raise ValueError(
        f"State dict does not fit {describe(backbone)}: {'; '.join(problems[:MAX_REPORTED])}"
        f"{more}. It looks like models.resnet(**{infer_resnet_options(weights)}).")
  return traverse_util.unflatten_dict(out)


def flax_to_torch(variables: Mapping) -> dict[str, np.ndarray]:
  """Our ResNet variables -> a torchvision-layout state dict (numpy), BN counters included.

  ``num_batches_tracked`` is written as 0 so that ``load_state_dict(strict=True)`` accepts the
  result; it only matters to PyTorch BatchNorm with ``momentum=None``.
  """
  out = {}
  for collection in ("params", "batch_stats"):
    flat = traverse_util.flatten_dict(jax.device_get(dict(variables.get(collection, {}))))
    for (module, field), value in flat.items():
      value = np.asarray(value, np.float32)
      if field == "kernel":
        value = np.ascontiguousarray(_conv_to_torch(value))
      out[_torch_key(module, field)] = value
      if field == "mean":
        out[f"{_torch_module_name(module)}.num_batches_tracked"] = np.zeros((), np.int64)
  return out


def describe(backbone) -> str:
  """One line naming the options of a :class:`vicreg_jax.models.ResNet`."""
  return (f"ResNet(stages={tuple(backbone.stage_sizes)}, bottleneck={backbone.bottleneck}, "
          f"width_multiplier={backbone.width_multiplier}, base_width={backbone.base_width}, "
          f"small_stem={backbone.small_stem}, spatial_dims={backbone.spatial_dims})")


def save_safetensors(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes a state dict that ``safetensors.torch.load_file`` reads without our package.

  Written with ``open`` (the umask's permissions, like the other export files) rather than
  ``safetensors.numpy.save_file``, which creates its files with mode 0600.
  """
  data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in state_dict.items()})
  with paths.open_file(path, "wb") as f:  # a local path or a gs:// / s3:// URL
    f.write(data)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads ``.safetensors`` (no torch needed) or ``.pth``/``.pt`` (needs torch) to numpy.

  Full official checkpoints (a dict with a ``model`` entry, e.g. ``resnet50_fullckpt.pth``)
  are unwrapped; floating-point tensors come back as float32.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Weights file {path} does not exist; pass the path of a .pth or "
                            ".safetensors ResNet state dict.")
  if path.endswith(".safetensors"):
    try:
      return safetensors.numpy.load_file(path)
    except (safetensors.SafetensorError, ValueError, OSError) as err:
      raise ValueError(f"{path} is not a readable .safetensors file ({err}); pass an "
                       "official/torchvision ResNet state dict.") from err
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise ImportError(f"Reading {path} needs PyTorch (pip install torch), or convert it to "
                      ".safetensors first.") from err
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as err:
    raise ValueError(f"{path} is not a readable PyTorch checkpoint ({str(err).splitlines()[0] if str(err) else type(err).__name__}); pass "
                     "an official/torchvision ResNet state dict (.pth or .safetensors).") from err
  if isinstance(obj, dict) and "model" in obj:
    obj = obj["model"]
  return {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in obj.items() if isinstance(v, torch.Tensor)}
