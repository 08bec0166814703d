"""Export the pretrained backbone (Flax msgpack + torchvision-layout safetensors), and import.

``python -m vicreg_jax.export --workdir W [--step N] [--branch a]`` writes, into
``W/export/`` (or ``--out``):

* ``backbone.msgpack``: the ResNet's ``{'params', 'batch_stats'}`` (``flax.serialization``);
* ``backbone.safetensors``: the same weights as a torchvision-layout state dict, loadable with
  ``torchvision.models.resnet50().load_state_dict(load_file(...), strict=False)`` (no fc);
* ``backbone.json``: the model config and the step, to rebuild the module.

``--import_weights resnet50.pth --arch resnet50`` converts an official or torchvision
checkpoint into the same three files, so our evaluation can run on released weights.
Training calls :func:`export_backbone` at the end of every run.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import app, flags
from absl import logging as absl_logging
from flax import serialization

from vicreg_jax import checkpoint, interop, models
from vicreg_jax import config as config_lib

EXPORT_DIR = "export"


def export_backbone(variables: dict, model_config: ml_collections.ConfigDict, out_dir: str, *,
                    step: int, branch: str = "a") -> str:
  """Writes one branch's backbone in both formats; returns ``out_dir``. Process 0 only."""
  backbone_vars = jax.device_get(models.backbone_variables(variables, branch))
  if jax.process_index() != 0:
    return out_dir
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "backbone.msgpack"), "wb") as f:
    f.write(serialization.to_bytes(backbone_vars))
  interop.save_safetensors(interop.flax_to_torch(backbone_vars),
                           os.path.join(out_dir, "backbone.safetensors"))
  with open(os.path.join(out_dir, "backbone.json"), "w", encoding="utf-8") as f:
    json.dump({"model": model_config.to_dict(), "step": step, "branch": branch}, f, indent=2)
  return out_dir


def load_exported(out_dir: str) -> tuple[models.ResNet, dict]:
  """Rebuilds the backbone module and its variables from an export folder."""
  with open(os.path.join(out_dir, "backbone.json"), encoding="utf-8") as f:
    meta = json.load(f)
  model_config = ml_collections.ConfigDict(meta["model"])
  backbone = models.create_backbone(model_config, meta["branch"])
  template = jax.device_get(interop.template_variables(backbone))
  with open(os.path.join(out_dir, "backbone.msgpack"), "rb") as f:
    variables = serialization.from_bytes(template, f.read())
  return backbone, variables


def export_from_workdir(workdir: str, step: int | None, out_dir: str, branch: str) -> str:
  """Restores ``step`` (default: latest) of a pretraining workdir and exports its backbone."""
  directory = checkpoint.checkpoint_dir(workdir)
  manager = ocp.CheckpointManager(directory)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"No checkpoints in {directory}; pass the --workdir of a "
                            "pretraining run.")
  step = max(steps) if step is None else step
  if step not in steps:
    raise ValueError(f"Step {step} is not in {workdir}; available steps: {sorted(steps)}.")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  model_config = ml_collections.ConfigDict(restored.meta["config"]["model"])
  return export_backbone(restored.state, model_config, out_dir, step=step, branch=branch)


def import_weights(path: str, model_config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Converts an official/torchvision ResNet checkpoint into an export folder."""
  backbone = models.create_backbone(model_config)
  variables = interop.torch_to_flax(interop.load_torch_state_dict(path), backbone)
  return export_backbone({k: {"backbone": v} for k, v in variables.items()}, model_config,
                         out_dir, step=0)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags; defined only when run as a program, since training imports this."""
  flags.DEFINE_string("workdir", None, "Pretraining workdir to export from.")
  flags.DEFINE_integer("step", None, "Checkpoint step to export (default: latest).")
  flags.DEFINE_string("branch", "a", "Branch whose backbone to export ('a' or 'b').")
  flags.DEFINE_string("out", None, "Output folder (default: <workdir>/export).")
  flags.DEFINE_string("import_weights", None, "A .pth/.safetensors ResNet to import instead.")
  flags.DEFINE_string("arch", "resnet50", "Architecture of --import_weights.")
  flags.DEFINE_integer("width_multiplier", 1, "Width multiplier of --import_weights.")


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs each restore phase at INFO
  if not FLAGS.workdir and not FLAGS.out:
    sys.exit("error: pass --workdir (or --out for --import_weights).")
  out_dir = FLAGS.out or os.path.join(FLAGS.workdir, EXPORT_DIR)
  try:
    if FLAGS.import_weights:
      model_config = config_lib.base_config().model
      model_config.arch, model_config.width_multiplier = FLAGS.arch, FLAGS.width_multiplier
      written = import_weights(FLAGS.import_weights, model_config, out_dir)
    else:
      written = export_from_workdir(FLAGS.workdir, FLAGS.step, out_dir, FLAGS.branch)
  except (ValueError, FileNotFoundError, ImportError) as err:
    sys.exit(f"error: {err}")
  print(f"Wrote backbone.msgpack, backbone.safetensors and backbone.json to {written}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
