"""One-off check: full ResNet-50 at 224 px, our Flax model vs the same weights in PyTorch.

Builds the official-layout PyTorch ResNet-50 of ``torch_reference.py`` with random weights
and random BatchNorm statistics, converts them with ``vicreg_jax.interop`` and prints the
max relative difference of the 2048-d features in eval and train mode.
Usage: python experiments/check_resnet50_parity.py  (needs torch; ~20 s on 2 CPU cores)
"""

import jax.numpy as jnp
import numpy as np
import torch

from torch_reference import CASES, TorchResNet, randomise

from vicreg_jax import interop, models


def main():
  block, layers = CASES["resnet50"]
  tmodel = randomise(TorchResNet(block, layers, 64), seed=0)
  backbone = models.resnet("resnet50")
  variables = interop.torch_to_flax({k: v.numpy() for k, v in tmodel.state_dict().items()},
                                    backbone)
  batch, size = 2, 224
  x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
  print(f"{'mode':>6} {'batch':>6} {'px':>4} {'max rel diff':>13} {'feature dim':>12}")
  for train in (False, True):
    tmodel.train(train)
    with torch.no_grad():
      want = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    out = backbone.apply(variables, jnp.asarray(x), train=train,
                         mutable=["batch_stats"] if train else False)
    got = np.asarray(out[0] if train else out)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    print(f"{'train' if train else 'eval':>6} {batch:>6} {size:>4} {err:>13.2e} {got.shape[1]:>12}")


if __name__ == "__main__":
  main()
