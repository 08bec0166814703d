"""Encoders and the VICReg module: official sizes and init, branches, per-view BatchNorm, dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vicreg_jax import config as config_lib
from vicreg_jax import losses, models, parallel

# Tiny encoder and expander: every test below compiles in seconds on 2 CPU cores.
TINY = dict(arch="resnet18", base_width=4, small_stem=True, expander="64-64-32",
            dtype="float32")


def n_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def model_config(**overrides):
  c = config_lib.base_config().model
  c.update(TINY)
  c.update(overrides)
  return c


def init(module, *inputs):
  """Variables of ``module`` for ``inputs``.

  An "rbg" key: XLA compiles a ResNet's threefry init in ~20 s on CPU, RngBitGenerator in ~3 s.
  """
  key = jax.random.key(0, impl="rbg")
  return jax.jit(functools.partial(module.init, train=False))(key, *inputs)


def param_shapes(module, *inputs):
  """Parameter shapes of ``module``, without computing anything."""
  return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                        *inputs)["params"]


def images(n: int, size: int, seed: int, scale: float = 1.0, shift: float = 0.0):
  x = np.random.default_rng(seed).standard_normal((n, size, size, 3)) * scale + shift
  return jnp.asarray(x, jnp.float32)


def intermediate_shapes(module, variables, x) -> dict:
  """Output shape and dtype of every submodule call, without computing anything."""
  _, state = jax.eval_shape(functools.partial(
      module.apply, train=False, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)
  return {name: out["__call__"][0] for name, out in state["intermediates"].items()
          if name != "__call__"}


@pytest.mark.parametrize("arch,width,count", [
    ("resnet18", 1, 11_176_512),    # torchvision resnet18 (11,689,512) without fc
    ("resnet34", 1, 21_284_672),    # torchvision resnet34 without fc
    ("resnet50", 1, 23_508_032),    # official resnet50.pth
    ("resnet50", 2, 93_907_072),    # official resnet50x2.pth ("93M")
    ("resnet101", 1, 42_500_160),   # torchvision resnet101 without fc
    ("resnet200", 2, 250_128_512),  # official resnet200x2.pth ("250M")
])
def test_parameter_counts_equal_the_official_models(arch, width, count):
  backbone = models.resnet(arch, width_multiplier=width)
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                train=False))
  assert n_params(shapes["params"]) == count


@pytest.mark.parametrize("arch,width,dim", [
    ("resnet18", 1, 512), ("resnet34", 1, 512), ("resnet50", 1, 2048), ("resnet50", 2, 4096),
    ("resnet50", 4, 8192), ("resnet50", 5, 10240), ("resnet200", 2, 4096)])
def test_representation_dim_is_the_official_width_and_the_output_width(arch, width, dim):
  assert models.representation_dim(arch, width, 64) == dim
  backbone = models.resnet(arch, width_multiplier=width, base_width=8)
  x = jnp.zeros((2, 32, 32, 3))
  out = jax.eval_shape(lambda: backbone.init_with_output(jax.random.key(0), x, train=False)[0])
  assert out.shape == (2, models.representation_dim(arch, width, 8))
  assert out.dtype == jnp.float32


def test_bad_names_and_specs_are_rejected_with_the_valid_choices():
  with pytest.raises(ValueError, match="resnet18.*resnet50"):
    models.resnet("resnet51")
  with pytest.raises(ValueError, match="resnet18"):
    models.representation_dim("resnet51")
  with pytest.raises(ValueError, match="spatial_dims"):
    models.resnet("resnet18", spatial_dims=3)
  for spec in ("8192-x", "", "8192--8192", "0-8", "8192-8192-"):
    with pytest.raises(ValueError, match="8192-8192-8192"):
      models.parse_spec(spec)
  assert models.parse_spec("8192-8192-8192") == [8192] * 3
  with pytest.raises(ValueError, match="bfloat16"):
    models.create_model(model_config(dtype="bf16"))


@pytest.fixture(scope="module")
def bottleneck_params():
  """ResNet-50 at base width 16: conv kernels large enough for init statistics."""
  return init(models.resnet("resnet50", base_width=16), jnp.zeros((1, 32, 32, 3)))["params"]


def test_conv_init_is_untruncated_kaiming_normal_fan_out(bottleneck_params):
  kernel = np.asarray(bottleneck_params["layer3_0_conv2"]["kernel"])  # [3, 3, 64, 64]
  fan_out = kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
  std = np.sqrt(2 / fan_out)
  assert abs(kernel.std() / std - 1) < 0.03
  assert abs(kernel.mean()) < 0.03 * std
  assert np.abs(kernel).max() > 3.5 * std  # a truncated normal stops at 2 std
  assert all("bias" not in p for name, p in bottleneck_params.items() if "conv" in name)


def test_last_batchnorm_scale_of_every_residual_branch_starts_at_zero(bottleneck_params):
  basic = jax.eval_shape(lambda: models.resnet("resnet18", base_width=4).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  assert {n for n in basic if n.endswith("bn2")} == {f"layer{i}_{j}_bn2" for i in range(1, 5)
                                                     for j in range(2)}
  scales = {n: np.asarray(p["scale"]) for n, p in bottleneck_params.items() if "bn" in n
            or "downsample_1" in n}
  zero = {n for n, s in scales.items() if np.all(s == 0)}
  one = {n for n, s in scales.items() if np.all(s == 1)}
  assert zero == {n for n in scales if n.endswith("_bn3")} and len(zero) == 16
  assert one == set(scales) - zero  # stem, bn1, bn2 and downsample BN start at 1


def test_expander_init_matches_pytorch_linear_and_ends_without_bias_bn_relu():
  fan_in = 256
  expander = models.Expander("512-512-256")
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, fan_in)), jnp.float32)
  variables = init(expander, x)
  params = variables["params"]
  assert set(params) == {"linear0", "bn0", "linear1", "bn1", "linear2"}
  assert "bias" not in params["linear2"]
  bound = 1 / np.sqrt(fan_in)
  kernel = np.asarray(params["linear0"]["kernel"])
  assert kernel.shape == (fan_in, 512)
  assert np.abs(kernel).max() <= bound and abs(kernel.std() * np.sqrt(3 * fan_in) - 1) < 0.01
  bias = np.asarray(params["linear0"]["bias"])
  assert np.abs(bias).max() <= bound and abs(bias.std() * np.sqrt(3) / bound - 1) < 0.15
  assert np.abs(np.asarray(params["linear1"]["bias"])).max() <= 1 / np.sqrt(512)
  out = expander.apply(variables, x, train=False)
  assert out.shape == (8, 256) and out.dtype == jnp.float32
  assert (out < 0).any()  # no ReLU after the last layer


@pytest.fixture(scope="module")
def shared():
  """The tiny shared-branch VICReg and its variables."""
  model = models.create_model(model_config())
  x = jnp.zeros((2, 8, 8, 3))
  return model, init(model, x, x)


def test_each_view_gets_its_own_batch_statistics(shared):
  """Per-view BN: two separate backbone calls (stats updated twice), not one on both views."""
  model, variables = shared
  # View b has other statistics than a. (A larger shift, 2.0, makes some channels of the
  # 1x1-map layers nearly constant over the 4 examples: BatchNorm's cancellation then turns
  # the float32 rounding of the convolutions - which differs between one batch of 8 and two
  # of 4 once 1x1 convs are dots on CPU - into 5e-4 relative differences.)
  a, b = images(4, 8, seed=0), images(4, 8, seed=1, scale=3.0, shift=1.0)
  out, state = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, a, b)
  backbone = models.create_backbone(model_config())
  step = jax.jit(functools.partial(backbone.apply, train=True, mutable=["batch_stats"]))
  bb = models.backbone_variables(variables)
  alone_a, after_a = step(bb, a)
  alone_b, after_b = step({**bb, **after_a}, b)
  for ours, alone in ((out["representation_a"], alone_a), (out["representation_b"], alone_b)):
    # Within 1e-5 of the largest feature (measured <= 2.7e-6): float32 rounding only.
    np.testing.assert_allclose(ours, alone, rtol=0, atol=1e-5 * float(np.max(np.abs(alone))))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
               state["batch_stats"]["backbone"], after_b["batch_stats"])
  joint, after_joint = step(bb, jnp.concatenate([a, b]))
  assert not np.allclose(joint[4:], alone_b, atol=1e-3)
  assert not np.allclose(after_joint["batch_stats"]["bn1"]["var"],
                         after_b["batch_stats"]["bn1"]["var"], rtol=1e-2)


def test_batch_statistics_are_global_under_jit_and_with_bn_axis_name_under_shard_map():
  """Sharded jit needs no axis name; shard_map needs ``bn_axis_name`` for global statistics."""
  options = dict(base_width=4, small_stem=True)
  backbone = models.resnet("resnet18", **options)
  synced = models.resnet("resnet18", bn_axis_name=parallel.DATA_AXIS, **options)
  x = images(8, 8, seed=2, scale=2.0)
  variables = init(backbone, x)
  mesh = parallel.make_mesh(jax.devices()[:2])
  forward = lambda module: (lambda v, x: module.apply(v, x, train=True,
                                                      mutable=["batch_stats"])[0])
  whole = forward(backbone)(variables, x)
  sharded = jax.jit(forward(backbone))(variables,
                                       jax.device_put(x, parallel.batch_sharding(mesh)))
  np.testing.assert_allclose(sharded, whole, rtol=1e-4, atol=1e-5)

  def per_shard(module):
    return jax.jit(jax.shard_map(forward(module), mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                                 out_specs=P(parallel.DATA_AXIS)))(variables, x)

  np.testing.assert_allclose(per_shard(synced), whole, rtol=1e-4, atol=1e-5)
  assert not np.allclose(per_shard(backbone), whole, atol=1e-3)


def test_separate_branches_have_their_own_parameters_and_may_differ(shared):
  _, variables = shared
  x = jnp.zeros((2, 8, 8, 3))
  assert set(variables["params"]) == {"backbone", "expander"}
  separate = param_shapes(models.create_model(model_config(shared_branches=False)), x, x)
  assert set(separate) == {"backbone", "expander", "backbone_b", "expander_b"}
  assert n_params(separate) == 2 * n_params(variables["params"])

  audio = model_config(shared_branches=False)
  audio.branch_b.update(dict(spatial_dims=1, small_stem=False, base_width=8))
  model = models.create_model(audio)
  backbone_b = models.create_backbone(audio, "b")
  wave = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 1)), jnp.float32)
  variables = init(model, x, wave)

  @jax.jit
  def outputs(variables):
    return (model.apply(variables, x, wave, train=False),
            model.apply(variables, wave, train=False, branch="b", method="encode"),
            backbone_b.apply(models.backbone_variables(variables, "b"), wave, train=False))

  out, encoded, alone = outputs(variables)
  assert out["embedding_a"].shape == out["embedding_b"].shape == (2, 32)
  assert out["representation_b"].shape == (2, models.representation_dim("resnet18", 1, 8))
  assert variables["params"]["backbone_b"]["conv1"]["kernel"].shape == (7, 1, 8)
  np.testing.assert_array_equal(encoded, out["representation_b"])
  np.testing.assert_allclose(alone, out["representation_b"], rtol=1e-6)
  assert not np.allclose(alone, 0)


def test_branch_b_options_need_separate_branches():
  config = model_config()
  config.branch_b.arch = "resnet34"
  with pytest.raises(ValueError, match="shared_branches"):
    models.create_model(config)
  with pytest.raises(ValueError, match="branch"):
    models.create_backbone(model_config(), "c")


def test_small_stem_keeps_the_input_resolution():
  x = jnp.zeros((1, 32, 32, 3))
  for small_stem, stem, layer1, layer4 in ((True, 32, 32, 4), (False, 16, 8, 1)):
    backbone = models.resnet("resnet18", base_width=4, small_stem=small_stem)
    variables = jax.eval_shape(functools.partial(backbone.init, train=False),
                               jax.random.key(0), x)
    shapes = intermediate_shapes(backbone, variables, x)
    assert shapes["bn1"].shape[1:3] == (stem, stem)
    assert shapes["layer1_1_conv2"].shape[1:3] == (layer1, layer1)
    assert shapes["layer4_1_conv2"].shape[1:3] == (layer4, layer4)
    kernel = variables["params"]["conv1"]["kernel"].shape[:2]
    assert kernel == ((3, 3) if small_stem else (7, 7))


def test_bfloat16_computes_in_bfloat16_with_float32_params_and_outputs(shared):
  model = models.create_model(model_config(dtype="bfloat16"))
  x = images(2, 8, seed=3)
  variables = init(model, x, x)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  shapes = intermediate_shapes(models.create_backbone(model_config(dtype="bfloat16")),
                               models.backbone_variables(variables), x)
  assert shapes["layer2_0_conv1"].dtype == jnp.bfloat16
  out = jax.jit(functools.partial(model.apply, train=False))(variables, x, x)
  assert {v.dtype for v in out.values()} == {jnp.dtype("float32")}
  f32_model, _ = shared
  want = f32_model.apply(variables, x, x, train=False)
  np.testing.assert_allclose(out["representation_a"], want["representation_a"], rtol=0.05,
                             atol=0.05 * np.abs(want["representation_a"]).max())



def max_error(got, want, rel: float, floor: float = 0.0) -> None:
  """Every leaf: max |got - want| <= rel * max |want leaf| + floor * max |want| of the tree."""
  scale = max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
  for path, g, w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(got),
                        jax.tree.leaves(want)):
    err = float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))))
    bound = rel * float(np.max(np.abs(w))) + floor * scale
    assert err <= bound, f"{jax.tree_util.keystr(path[0])}: {err:.3g} > {bound:.3g}"


def rel_error(got, want) -> float:
  """Largest |got - want| over the leaves, relative to each leaf's largest |want|."""
  return max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)))
                   / np.max(np.abs(np.asarray(w, np.float64))))
             for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


def by_view_batching(**overrides) -> dict:
  """The tiny shared-branch model in each explicit view-batching mode."""
  return {mode: models.create_model(model_config(view_batching=mode, **overrides))
          for mode in ("one_pass", "two_pass")}


def two_views():
  """Views with different statistics (per-view BatchNorm matters)."""
  return images(8, 8, seed=0), images(8, 8, seed=1, scale=3.0, shift=2.0)


def train_step_outputs(model, variables, a, b, grads: bool = True) -> dict:
  """VICReg loss, model outputs, updated batch_stats (and every parameter's gradient)."""
  def loss_fn(params):
    out, updates = model.apply({**variables, "params": params}, a, b, train=True,
                               mutable=["batch_stats"])
    loss, _ = losses.vicreg_loss(out["embedding_a"], out["embedding_b"])
    return loss, dict(loss=loss, out=out, batch_stats=updates["batch_stats"])

  if not grads:
    return jax.jit(lambda p: loss_fn(p)[1])(variables["params"])
  (_, result), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
  return dict(result, grads=grads)


def test_one_pass_equals_two_passes_loss_outputs_gradients_and_batch_stats():
  """float32: the stacked pass adds the same numbers in another order; over ~20 BatchNorms
  and the loss the results agree to 2e-5 of each leaf's scale (measured <= 6e-6; float32
  eps is 1.2e-7). The expander's pre-BatchNorm biases have an analytically zero gradient
  (BatchNorm removes any bias), float noise ~1e-7 in both modes: hence the floor."""
  modes = by_view_batching()
  a, b = two_views()
  variables = init(modes["two_pass"], a, b)
  one_pass_variables = init(modes["one_pass"], a, b)
  assert jax.tree.structure(one_pass_variables) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, one_pass_variables, variables)
  got, want = (train_step_outputs(modes[m], variables, a, b) for m in ("one_pass", "two_pass"))
  for key in ("loss", "out", "batch_stats"):
    max_error(got[key], want[key], rel=2e-5)
  max_error(got["grads"], want["grads"], rel=2e-5, floor=1e-6)


def test_one_pass_in_bfloat16_is_as_accurate_as_two_passes():
  """bf16 compute (float32 params and statistics): both modes round differently at bf16's
  2^-8, compounding over the layers (they differ by ~1e-2); measured against the float32
  result, one pass is as accurate as two passes (within 2x, measured 0.8-1.2x)."""
  modes = by_view_batching(dtype="bfloat16")
  a, b = two_views()
  variables = init(modes["two_pass"], a, b)
  exact = train_step_outputs(by_view_batching()["two_pass"], variables, a, b, grads=False)
  one, two = (train_step_outputs(modes[m], variables, a, b, grads=False)
              for m in ("one_pass", "two_pass"))
  assert one["out"]["embedding_a"].dtype == jnp.float32
  for key in ("loss", "out", "batch_stats"):
    for name in (one[key] if key == "out" else [None]):
      pick = (lambda r: r[key][name]) if name else (lambda r: r[key])
      assert rel_error(pick(one), pick(exact)) <= 2 * rel_error(pick(two), pick(exact)), name
      assert rel_error(pick(one), pick(two)) <= 0.05, name


def test_view_batching_falls_back_to_two_passes_or_refuses_when_it_cannot_apply():
  """Separate branches or views of different shapes: "auto" runs two passes, "one_pass"
  says what to set; evaluation through one encoder is the same in every mode."""
  with pytest.raises(ValueError, match="view_batching=one_pass needs shared branches"):
    models.create_model(model_config(view_batching="one_pass", shared_branches=False))
  with pytest.raises(ValueError, match="view_batching"):
    models.create_model(model_config(view_batching="sometimes"))
  small, large = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 16, 16, 3))
  auto = models.create_model(model_config())
  assert auto.one_pass(small, small) and not auto.one_pass(small, large)
  assert not models.create_model(model_config(shared_branches=False)).one_pass(small, small)
  assert not models.create_model(model_config(view_batching="two_pass")).one_pass(small, small)
  variables = jax.eval_shape(functools.partial(auto.init, train=False), jax.random.key(0),
                             small, large)
  out = jax.eval_shape(functools.partial(auto.apply, train=True, mutable=["batch_stats"]),
                       variables, small, large)[0]
  assert out["embedding_a"].shape == out["embedding_b"].shape == (2, 32)
  forced = models.create_model(model_config(view_batching="one_pass"))
  with pytest.raises(ValueError, match="views differ"):
    forced.one_pass(small, large)
