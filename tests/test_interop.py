"""PyTorch interop: a minimal official-layout ResNet in torch computes the same features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import interop, models

torch = pytest.importorskip("torch")
nn = torch.nn


class Basic(nn.Module):
  expansion = 1

  def __init__(self, inp, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inp != planes:
      self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes))

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inp, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inp != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(inp, planes * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  """Official resnet.py layout: ConstantPad2d(1) + 7x7/2 conv with padding 2, max-pool, 4 stages."""

  def __init__(self, block, layers, width):
    super().__init__()
    self.padding = nn.ConstantPad2d(1, 0.0)
    self.conv1 = nn.Conv2d(3, width, 7, 2, 2, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inp = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block(inp, width * 2**i, 2 if i > 0 and j == 0 else 1))
        inp = width * 2**i * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(self.padding(x)))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean((2, 3))


def randomise(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith("num_batches_tracked"):
        continue
      if name.endswith("running_var"):
        t.copy_(torch.rand(t.shape, generator=g) + 0.5)
      elif name.endswith(("weight", "bias", "running_mean")):
        scale = 0.1 if "conv" in name or "downsample.0" in name else 0.5
        t.copy_(torch.randn(t.shape, generator=g) * scale + (1.0 if name.endswith("bn1.weight") else 0.0))
  return model


CASES = {"resnet18": (Basic, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


@pytest.mark.parametrize("arch,width,size", [("resnet18", 8, 32), ("resnet50", 8, 48)])
def test_features_match_pytorch_in_eval_and_train_mode(arch, width, size):
  block, layers = CASES[arch]
  tmodel = randomise(TorchResNet(block, layers, width), seed=1)
  state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
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
    got = np.asarray(got[0] if train else got)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err <= 1e-4, (arch, train, err)


def test_round_trip_through_safetensors_is_exact(tmp_path):
  backbone = models.resnet("resnet18", base_width=4)
  variables = backbone.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  variables = jax.tree.map(lambda v: v + np.random.default_rng(1).standard_normal(v.shape), variables)
  path = str(tmp_path / "backbone.safetensors")
  interop.save_safetensors(interop.flax_to_torch(variables), path)
  back = interop.torch_to_flax(interop.load_state_dict(path), backbone)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), b)
  # The file loads into the PyTorch model with strict key checking.
  tmodel = TorchResNet(Basic, (2, 2, 2, 2), 4)
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  tmodel.load_state_dict(load_file(path), strict=True)


def test_prefixes_are_stripped_and_mismatches_named():
  tmodel = TorchResNet(Basic, (2, 2, 2, 2), 4)
  state = {f"module.backbone.{k}": v.numpy() for k, v in tmodel.state_dict().items()}
  state["module.projector.0.weight"] = np.zeros((2, 2))
  interop.torch_to_flax(state, models.resnet("resnet18", base_width=4))
  with pytest.raises(ValueError, match="missing layer1.0.bn3"):
    interop.torch_to_flax(state, models.resnet("resnet50", base_width=4))
  with pytest.raises(ValueError, match="shape"):
    interop.torch_to_flax(state, models.resnet("resnet18", base_width=8))
