"""PyTorch interop: a minimal official-layout ResNet in torch computes the same features."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import interop, models

torch = pytest.importorskip("torch")
from experiments.torch_reference import CASES, Basic, Bottleneck, TorchResNet, randomise  # noqa: E402,E501




def random_variables(backbone, seed: int = 0) -> dict:
  """Random float32 values in the shapes of ``backbone``'s variables (no init compute)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                      interop.template_variables(backbone))


def bn_inputs_per_channel(backbone, variables, x) -> dict[str, int]:
  """Values each BatchNorm averages over per channel (batch x positions), by module name."""
  _, state = jax.eval_shape(functools.partial(
      backbone.apply, train=False, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)
  return {name: int(np.prod(out["__call__"][0].shape[:-1]))
          for name, out in state["intermediates"].items() if name in variables["batch_stats"]}


@pytest.mark.parametrize("arch,width,size", [("resnet18", 8, 32), ("resnet50", 8, 48)])
def test_features_match_pytorch_in_eval_and_train_mode(arch, width, size):
  block, layers = CASES[arch]
  tmodel = randomise(TorchResNet(block, layers, width), seed=1)
  state = {k: v.numpy().copy() for k, v in tmodel.state_dict().items()}
  backbone = models.resnet(arch, base_width=width)
  variables = interop.torch_to_flax(state, backbone)
  x = np.random.default_rng(0).standard_normal((4, size, size, 3)).astype(np.float32)
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2))
  for train in (False, True):
    tmodel.train(train)
    with torch.no_grad():
      want = tmodel(tx).numpy()
    got = backbone.apply(variables, jnp.asarray(x), train=train,
                         mutable=["batch_stats"] if train else False)
    features = np.asarray(got[0] if train else got)
    err = np.max(np.abs(features - want)) / np.max(np.abs(want))
    assert err <= 1e-4, (arch, train, err)
  # Running averages after the train-mode step: equal means; PyTorch averages the unbiased
  # batch variance, Flax the biased one (ratio n/(n-1) on the update).
  updated = interop.flax_to_torch({"params": variables["params"], **got[1]})
  counts = bn_inputs_per_channel(backbone, variables, jnp.asarray(x))
  torch_now = tmodel.state_dict()
  for module, n in counts.items():
    key = module.replace("_", ".")
    old_var = state[f"{key}.running_var"]
    np.testing.assert_allclose(updated[f"{key}.running_mean"],
                               torch_now[f"{key}.running_mean"].numpy(), rtol=1e-4, atol=1e-5)
    flax_update = updated[f"{key}.running_var"] - 0.9 * old_var
    torch_update = torch_now[f"{key}.running_var"].numpy() - 0.9 * old_var
    np.testing.assert_allclose(flax_update * n / (n - 1), torch_update, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("arch,options", [
    ("resnet18", dict(base_width=4)), ("resnet50", dict(base_width=4, small_stem=True)),
    ("resnet18", dict(base_width=4, spatial_dims=1))])
def test_round_trip_through_safetensors_is_exact(tmp_path, arch, options):
  backbone = models.resnet(arch, **options)
  variables = random_variables(backbone)
  path = str(tmp_path / "backbone.safetensors")
  interop.save_safetensors(interop.flax_to_torch(variables), path)
  state = interop.load_torch_state_dict(path)
  assert interop.infer_resnet_options(state) == {
      **dict(arch=arch, width_multiplier=1, small_stem=False, spatial_dims=2), **options}
  back = interop.torch_to_flax(state, backbone)
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_export_loads_into_the_official_layout_pytorch_model(tmp_path):
  backbone = models.resnet("resnet18", base_width=4)
  variables = random_variables(backbone)
  path = str(tmp_path / "backbone.safetensors")
  interop.save_safetensors(interop.flax_to_torch(variables), path)
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  tmodel = TorchResNet(Basic, (2, 2, 2, 2), 4)
  tmodel.load_state_dict(load_file(path), strict=True)
  np.testing.assert_array_equal(tmodel.layer2[0].downsample[0].weight.detach().numpy(),
                                np.asarray(variables["params"]["layer2_0_downsample_0"]["kernel"])
                                .transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(tmodel.layer4[1].bn2.running_var.numpy(),
                                variables["batch_stats"]["layer4_1_bn2"]["var"])


def test_pth_files_and_full_checkpoints_are_read(tmp_path):
  tmodel = randomise(TorchResNet(Basic, (2, 2, 2, 2), 4), seed=2)
  backbone = models.resnet("resnet18", base_width=4)
  torch.save(tmodel.state_dict(), tmp_path / "resnet.pth")
  plain = interop.torch_to_flax(interop.load_torch_state_dict(str(tmp_path / "resnet.pth")),
                                backbone)
  full = {f"module.backbone.{k}": v for k, v in tmodel.state_dict().items()}
  full["module.projector.0.weight"] = torch.zeros(8, 32)
  full["module.projector.1.running_mean"] = torch.zeros(8)
  torch.save(dict(epoch=3, model=full, optimizer={"state": {}, "param_groups": []}),
             tmp_path / "model.pth")
  wrapped = interop.torch_to_flax(interop.load_torch_state_dict(str(tmp_path / "model.pth")),
                                  backbone)
  jax.tree.map(np.testing.assert_array_equal, plain, wrapped)
  np.testing.assert_array_equal(plain["params"]["layer3_1_bn1"]["scale"],
                                tmodel.layer3[1].bn1.weight.detach().numpy())


def test_mismatches_name_the_offending_keys_and_the_arch_they_suggest():
  state = {k: v.numpy() for k, v in TorchResNet(Basic, (2, 2, 2, 2), 4).state_dict().items()}
  state["fc.weight"] = np.zeros((10, 32), np.float32)
  with pytest.raises(ValueError, match=r"missing layer1\.0\.bn3.*'arch': 'resnet18'"):
    interop.torch_to_flax(state, models.resnet("resnet50", base_width=4))
  with pytest.raises(ValueError, match=r"conv1\.weight has shape \(4, 3, 7, 7\), expected "
                     r"\(8, 3, 7, 7\).*'base_width': 4"):
    interop.torch_to_flax(state, models.resnet("resnet18", base_width=8))
  del state["layer4.1.bn2.running_var"]
  with pytest.raises(ValueError, match=r"missing layer4\.1\.bn2\.running_var"):
    interop.torch_to_flax(state, models.resnet("resnet18", base_width=4))


def test_official_widths_are_recognised():
  for arch, width in (("resnet50", 1), ("resnet50", 2), ("resnet200", 2)):
    with torch.device("meta"):  # shapes only
      state = TorchResNet(Bottleneck, models.resnet(arch).stage_sizes, 64 * width).state_dict()
    assert interop.infer_resnet_options(state) == dict(
        arch=arch, width_multiplier=width, base_width=64, small_stem=False, spatial_dims=2)


def test_safetensors_export_has_the_umask_permissions_of_the_other_files(tmp_path):
  path = tmp_path / "w.safetensors"
  interop.save_safetensors({"x": np.ones((2, 2), np.float32)}, str(path))
  (tmp_path / "other").write_text("")
  assert path.stat().st_mode & 0o777 == (tmp_path / "other").stat().st_mode & 0o777


@pytest.mark.parametrize("name", ["garbage.safetensors", "garbage.pth", "missing.pth"])
def test_unreadable_weight_files_name_the_path(tmp_path, name):
  path = tmp_path / name
  if not name.startswith("missing"):
    path.write_bytes(b"not a checkpoint at all")
  with pytest.raises((ValueError, FileNotFoundError), match=name):
    interop.load_torch_state_dict(str(path))
