"""Encoders and the VICReg module: official parameter counts, init, branches, per-view BN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import models


def n_params(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("arch,width,count", [
    ("resnet50", 1, 23_508_032), ("resnet50", 2, 93_907_072), ("resnet18", 1, 11_176_512)])
def test_parameter_counts_equal_the_official_models(arch, width, count):
  backbone = models.resnet(arch, width_multiplier=width)
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                train=False))
  assert n_params(shapes["params"]) == count
  assert models.representation_dim(arch, width) == {1: 2048, 2: 4096}[width] * (
      1 if arch == "resnet50" else 0.25)


def test_unknown_arch_and_bad_spec_are_rejected():
  with pytest.raises(ValueError, match="resnet18"):
    models.resnet("resnet51")
  with pytest.raises(ValueError, match="8192-8192-8192"):
    models.parse_spec("8192-x")


def small_config(**kw):
  c = config_lib.base_config().model
  c.arch, c.base_width, c.small_stem, c.expander, c.dtype = "resnet18", 4, True, "64-64-32", "float32"
  for k, v in kw.items():
    c[k] = v
  return c


def test_init_matches_pytorch_defaults():
  model = models.create_model(small_config(expander="256-256-128"))
  x = jnp.zeros((2, 8, 8, 3))
  params = jax.jit(lambda k: model.init(k, x, x, train=False))(jax.random.key(0))["params"]
  w0 = np.asarray(params["expander"]["linear0"]["kernel"])  # fan_in 32 (resnet18 width 4)
  bound = 1 / np.sqrt(w0.shape[0])
  assert np.abs(w0).max() <= bound and abs(w0.std() - bound / np.sqrt(3)) < 0.05 * bound
  b0 = np.asarray(params["expander"]["linear0"]["bias"])
  assert np.abs(b0).max() <= bound and b0.std() > bound / 3
  assert "bias" not in params["expander"]["linear2"]  # last layer without bias
  bb = params["backbone"]
  assert np.all(np.asarray(bb["layer1_0_bn2"]["scale"]) == 0)  # zero-init residual
  assert np.all(np.asarray(bb["layer1_0_bn1"]["scale"]) == 1)
  r50 = models.resnet("resnet50", base_width=16)
  init = jax.jit(lambda key: r50.init(key, jnp.zeros((1, 32, 32, 3)), train=False))
  conv = np.asarray(init(jax.random.key(1))["params"]["layer3_0_conv2"]["kernel"])
  fan_out = conv.shape[0] * conv.shape[1] * conv.shape[3]
  assert abs(conv.std() / np.sqrt(2 / fan_out) - 1) < 0.02  # kaiming normal, fan_out


def test_separate_branches_may_differ_in_architecture_and_rank():
  shared = models.create_model(small_config())
  x = jnp.zeros((2, 8, 8, 3))
  p_shared = shared.init(jax.random.key(0), x, x, train=False)["params"]
  separate = models.create_model(small_config(shared_branches=False))
  p_sep = separate.init(jax.random.key(0), x, x, train=False)["params"]
  assert set(p_sep) == {"backbone", "expander", "backbone_b", "expander_b"}
  assert n_params(p_sep) == 2 * n_params(p_shared)
  audio = small_config(shared_branches=False)
  audio.branch_b.spatial_dims = 1
  audio.branch_b.small_stem = False
  model = models.create_model(audio)
  wave = jnp.zeros((2, 64, 1))
  variables = model.init(jax.random.key(0), x, wave, train=False)
  out = model.apply(variables, x, wave, train=False)
  assert out["embedding_a"].shape == out["embedding_b"].shape == (2, 32)
  assert variables["params"]["backbone_b"]["conv1"]["kernel"].shape == (7, 1, 4)


def test_each_view_gets_its_own_batch_statistics():
  """Per-view BN: two separate backbone calls, not one call on the concatenated views."""
  cfg = small_config()
  model = models.create_model(cfg)
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((4, 8, 8, 3)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((4, 8, 8, 3)) * 3 + 2, jnp.float32)
  variables = model.init(jax.random.key(0), a, b, train=False)
  out, _ = model.apply(variables, a, b, train=True, mutable=["batch_stats"])
  backbone = models.create_backbone(cfg)
  bb_vars = models.backbone_variables(variables)
  alone, _ = backbone.apply(bb_vars, b, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out["representation_b"], alone, rtol=1e-5, atol=1e-6)
  joint, _ = backbone.apply(bb_vars, jnp.concatenate([a, b]), train=True, mutable=["batch_stats"])
  assert not np.allclose(joint[4:], alone, atol=1e-3)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = models.create_model(small_config(dtype="bfloat16"))
  x = jnp.zeros((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, x, train=False)
  out = model.apply(variables, x, x, train=False)
  assert {v.dtype for v in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
  assert out["embedding_a"].dtype == jnp.float32
