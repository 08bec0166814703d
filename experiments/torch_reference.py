"""The official ``resnet.py`` layout in PyTorch, for parity checks of our Flax ResNets.

A minimal transcription (basic and v1.5 bottleneck blocks, the official stem of
``ConstantPad2d(1)`` + 7x7/2 conv with padding 2, max-pool, four stages, global average pool)
used by ``tests/test_interop.py`` and ``experiments/check_resnet50_parity.py``; ``randomise``
fills weights and BatchNorm statistics with random values so every path is exercised.
"""

import torch
from torch import nn


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
        shift = 1.0 if name.endswith("bn1.weight") else 0.0
        t.copy_(torch.randn(t.shape, generator=g) * scale + shift)
  return model


CASES = {"resnet18": (Basic, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}
