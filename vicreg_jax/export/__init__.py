"""Export the pretrained backbone (Flax msgpack + torchvision-layout safetensors), and import.

``python -m vicreg_jax.export --workdir W [--step N] [--branch a]`` writes, into
``W/export/`` (or ``--out``):

* ``backbone.msgpack``: the ResNet's ``{'params', 'batch_stats'}`` (``flax.serialization``);
* ``backbone.safetensors``: the same weights as a torchvision-layout state dict, loadable with
  ``torchvision.models.resnet50().load_state_dict(load_file(...), strict=False)`` (no fc);
* ``backbone.json``: the model config, the step and the input channels, to rebuild the module.

A run on audio (``data.source=audio``) also writes branch b's backbone (the log-mel encoder)
into ``W/export_b/``.

``--import_weights resnet50.pth --arch resnet50 --workdir W`` converts an official or
torchvision checkpoint into step 0 of ``W/checkpoints`` (the evaluation CLI, ``python -m
vicreg_jax.evaluate --workdir W``, then runs on the released weights); with ``--out DIR``
instead of ``--workdir`` it writes the three export files there.
Training calls :func:`export_backbone` at the end of every run. This package is the library;
the command line is its ``__main__``.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from flax import serialization

from vicreg_jax import checkpoint, interop, models, paths

EXPORT_DIR = "export"
EXPORT_DIR_B = "export_b"  # branch b's backbone, when the branches differ (audio: log-mel)


def export_backbone(variables: dict, model_config: ml_collections.ConfigDict, out_dir: str, *,
                    step: int, branch: str = "a") -> str:
  """Writes one branch's backbone in both formats; returns ``out_dir``. Process 0 only."""
  backbone_vars = jax.device_get(models.backbone_variables(variables, branch))
  if jax.process_index() != 0:
    return out_dir
  paths.makedirs(out_dir)
  with paths.open_file(paths.join(out_dir, "backbone.msgpack"), "wb") as f:
    f.write(serialization.to_bytes(backbone_vars))
  interop.save_safetensors(interop.flax_to_torch(backbone_vars),
                           paths.join(out_dir, "backbone.safetensors"))
  with paths.open_file(paths.join(out_dir, "backbone.json"), "w") as f:
    json.dump({"model": model_config.to_dict(), "step": step, "branch": branch,
               "in_channels": models.in_channels(backbone_vars)},
              f, indent=2)
  return out_dir


def load_exported(out_dir: str) -> tuple[models.ResNet, dict]:
  """Rebuilds the backbone module and its variables from an export folder."""
  meta = json.loads(paths.read_text(paths.join(out_dir, "backbone.json")))
  model_config = ml_collections.ConfigDict(meta["model"])
  backbone = models.create_backbone(model_config, meta["branch"])
  template = jax.device_get(interop.template_variables(backbone, meta.get("in_channels", 3)))
  variables = serialization.from_bytes(
      template, paths.read_bytes(paths.join(out_dir, "backbone.msgpack")))
  return backbone, variables


def export_from_workdir(workdir: str, step: int | None, out_dir: str, branch: str, mesh) -> str:
  """Restores ``step`` (default: latest) of a pretraining workdir on ``mesh`` and exports its
  backbone."""
  variables, saved_config, step = checkpoint.restore_variables(workdir, step, mesh)
  model_config = ml_collections.ConfigDict(saved_config["model"])
  return export_backbone(variables, model_config, out_dir, step=step, branch=branch)


def import_backbone(path: str, model_config: ml_collections.ConfigDict) -> dict:
  """An official/torchvision ResNet checkpoint as our backbone's ``{params, batch_stats}``."""
  backbone = models.create_backbone(model_config)
  return interop.torch_to_flax(interop.load_torch_state_dict(path), backbone)


def import_weights(path: str, model_config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Converts an official/torchvision ResNet checkpoint into an export folder."""
  variables = import_backbone(path, model_config)
  return export_backbone({k: {"backbone": v} for k, v in variables.items()}, model_config,
                         out_dir, step=0)


def import_into_workdir(path: str, config: ml_collections.ConfigDict, workdir: str) -> str:
  """Converts released weights into a checkpoint of ``workdir`` that evaluation can read."""
  variables = import_backbone(path, config.model)
  return checkpoint.save_imported(workdir, variables, config, os.path.abspath(path))
