"""Backbone export after pretraining, the export CLI function, and importing torch weights."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import export, interop, models, parallel, train
from vicreg_jax import config as config_lib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  config = config_lib.load_config_file(f"{CONFIG_DIR}/demo.py:tiny", num_train_steps=2)
  workdir = str(tmp_path_factory.mktemp("run"))
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_training_exports_a_backbone_that_reproduces_features(finished_run):
  config, workdir, result = finished_run
  backbone, variables = export.load_exported(f"{workdir}/export")
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 8, 8, 3)), jnp.float32)
  want = result.model.apply({"params": result.state.params, "batch_stats": result.state.batch_stats},
                            x, train=False, method="encode")
  np.testing.assert_array_equal(backbone.apply(variables, x, train=False), want)
  torch_layout = interop.load_torch_state_dict(f"{workdir}/export/backbone.safetensors")
  assert "layer4.1.bn2.running_var" in torch_layout and "conv1.weight" in torch_layout


def test_export_from_workdir_checks_the_step(finished_run, tmp_path):
  _, workdir, _ = finished_run
  mesh = parallel.make_mesh()
  out = export.export_from_workdir(workdir, None, str(tmp_path / "latest"), "a", mesh)
  assert sorted(p.name for p in pathlib.Path(out).iterdir()) == [
      "backbone.json", "backbone.msgpack", "backbone.safetensors"]
  with pytest.raises(ValueError, match="available steps"):
    export.export_from_workdir(workdir, 12345, str(tmp_path / "x"), "a", mesh)
  with pytest.raises(FileNotFoundError, match="No checkpoints"):
    export.export_from_workdir(str(tmp_path), None, str(tmp_path / "y"), "a", mesh)


def test_import_weights_round_trip(tmp_path):
  backbone = models.resnet("resnet18", base_width=4)
  variables = backbone.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)), train=False)
  interop.save_safetensors(interop.flax_to_torch(variables), str(tmp_path / "w.safetensors"))
  config = config_lib.base_config().model
  config.arch, config.base_width, config.expander, config.dtype = "resnet18", 4, "8-8", "float32"
  export.import_weights(str(tmp_path / "w.safetensors"), config, str(tmp_path / "imported"))
  _, back = export.load_exported(str(tmp_path / "imported"))
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)
