"""Our compiled VICReg step against the official PyTorch step on the same CPU cores, interleaved.

Usage (from the repository root, torch installed: ``pip install -e '.[test]'``):
  python experiments/compare_torch_cpu.py                         # ResNet-50, 64 px, 32 pairs
  python experiments/compare_torch_cpu.py --rounds 6 --arch resnet18 --image_size 32
  python experiments/compare_torch_cpu.py --parts                 # + forward/backward by part
  XLA_FLAGS=--xla_disable_hlo_passes=algsimp python experiments/compare_torch_cpu.py
  python experiments/compare_torch_cpu.py --nn_conv_everywhere  # without the model fix

Both sides: the same architecture (official ``resnet.py`` layout), expander, batch of view
pairs, resolution, float32, two forward passes with per-view BatchNorm, the official loss and
LARS (weight decay and trust ratio on ``ndim != 1`` parameters, momentum, lr after momentum),
synthetic views. Ours is ``train.make_train_step`` as pretraining runs it (it also augments
the uint8 views on the device: ~1% of the step here; see ``benchmark_step.py``); PyTorch's
is the official ``main_vicreg.py`` step (NCHW, as the official code runs it) on float views.
The rounds alternate ours / PyTorch so both see the same machine load; each round prints
seconds per step of both, their ratio and the 1-minute load average.

XLA options come from ``XLA_FLAGS`` as for any JAX program; the table names those in
effect. XLA:CPU swaps the operands of 3x3 convolutions on maps smaller than the kernel
(ResNet-50's 2x2 last stage at 64 px) into a slow loop (``experiments/README.md``), and runs
1x1 convolutions and their kernel gradients slower than the same matrix products; the model
computes those as (strided) slices + one dot (``vicreg_jax/models/dot_conv.py``).
``--nn_conv_everywhere`` undoes that to measure it, and
``XLA_FLAGS=--xla_disable_hlo_passes=algsimp`` is the XLA-side alternative.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from timing import use_nn_conv_everywhere
from torch_reference import CASES, TorchResNet
from vicreg_jax import losses, models, optim, parallel, train
from vicreg_jax.config import load_config_file

def torch_expander(spec: str, in_dim: int) -> nn.Sequential:
  """The official ``Projector``: (Linear, BatchNorm1d, ReLU) x (k-1), then Linear without bias."""
  widths = [in_dim] + [int(w) for w in spec.split("-")]
  layers = []
  for i in range(len(widths) - 2):
    layers += [nn.Linear(widths[i], widths[i + 1]), nn.BatchNorm1d(widths[i + 1]), nn.ReLU(True)]
  layers.append(nn.Linear(widths[-2], widths[-1], bias=False))
  return nn.Sequential(*layers)


class TorchLARS(torch.optim.Optimizer):
  """The official ``main_vicreg.py`` LARS, with its ``exclude_bias_and_norm`` filters."""

  def __init__(self, params, lr, weight_decay, momentum, eta):
    super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

  @torch.no_grad()
  def step(self):  # pylint: disable=arguments-differ
    for g in self.param_groups:
      for p in g["params"]:
        dp = p.grad
        if dp is None:
          continue
        if p.ndim != 1:
          dp = dp.add(p, alpha=g["weight_decay"])
          param_norm, update_norm = torch.norm(p), torch.norm(dp)
          one = torch.ones_like(param_norm)
          q = torch.where(param_norm > 0.0,
                          torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one),
                          one)
          dp = dp.mul(q)
        state = self.state[p]
        if "mu" not in state:
          state["mu"] = torch.zeros_like(p)
        mu = state["mu"]
        mu.mul_(g["momentum"]).add_(dp)
        p.add_(mu, alpha=-g["lr"])


def torch_vicreg_loss(x, y, loss_config):
  """The official ``VICReg.forward`` loss on one process (no gather)."""
  n, d = x.shape
  repr_loss = nn.functional.mse_loss(x, y)
  x = x - x.mean(dim=0)
  y = y - y.mean(dim=0)
  std_x = torch.sqrt(x.var(dim=0) + loss_config.eps)
  std_y = torch.sqrt(y.var(dim=0) + loss_config.eps)
  std_loss = (torch.mean(nn.functional.relu(1 - std_x)) / 2
              + torch.mean(nn.functional.relu(1 - std_y)) / 2)
  off = lambda c: c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()
  cov_loss = (off(x.T @ x / (n - 1)).pow(2).sum() / d + off(y.T @ y / (n - 1)).pow(2).sum() / d)
  return (loss_config.sim_coeff * repr_loss + loss_config.std_coeff * std_loss
          + loss_config.cov_coeff * cov_loss)


class TorchStep:
  """The official training step: two backbone passes, projector, loss, backward, LARS."""

  def __init__(self, config, pairs: int, size: int, channels_last: bool):
    block, layers = CASES[config.model.arch]
    torch.manual_seed(0)
    self.backbone = TorchResNet(block, layers, config.model.base_width)
    rep_dim = models.representation_dim(config.model.arch, 1, config.model.base_width)
    self.projector = torch_expander(config.model.expander, rep_dim)
    params = list(self.backbone.parameters()) + list(self.projector.parameters())
    self.opt = TorchLARS(params, lr=0.1, weight_decay=config.optim.weight_decay,
                         momentum=config.optim.momentum, eta=config.optim.trust_coefficient)
    self.loss_config = config.loss
    gen = torch.Generator().manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
      self.backbone = self.backbone.to(memory_format=torch.channels_last)
    self.views = [torch.randn(pairs, 3, size, size, generator=gen).contiguous(memory_format=fmt)
                  for _ in range(2)]

  def loss(self):
    x = self.projector(self.backbone(self.views[0]))
    y = self.projector(self.backbone(self.views[1]))
    return torch_vicreg_loss(x, y, self.loss_config)

  def __call__(self) -> float:
    self.opt.zero_grad()
    loss = self.loss()
    loss.backward()
    self.opt.step()
    return loss.item()


def build_ours(config, pairs: int, size: int):
  """Our train state, batch and compiled step (and its compile seconds) for ``config``."""
  mesh = parallel.make_mesh()
  config.batch_size = pairs
  model = models.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optim, global_batch=pairs, steps_per_epoch=1000,
                                        total_steps=100_000)
  state = train.create_train_state(config, model, tx, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.host_to_global(mesh, {
      name: rng.integers(0, 256, (pairs, size, size, 3), dtype=np.uint8)
      for name in ("view_a", "view_b")})
  step_fn = train.compile_train_step(train.make_train_step(config, model, tx, schedule), mesh)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  return state, batch, compiled, time.perf_counter() - start, model


def seconds(fn, repeats: int) -> list[float]:
  """Wall seconds of each of ``repeats`` calls of ``fn`` (which must wait for its result)."""
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    out.append(time.perf_counter() - start)
  return out


def load1() -> float:
  with open("/proc/loadavg", encoding="utf-8") as f:
    return float(f.read().split()[0])


def parts(config, state, pairs: int, size: int, tstep: TorchStep, repeats: int) -> None:
  """Forward and forward+backward of the trunk and of the expander + loss, both frameworks."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((pairs, size, size, 3), dtype=np.float32))
  variables = {"params": state.params["backbone"],
               "batch_stats": state.batch_stats["backbone"]}
  backbone = models.resnet(config.model.arch, base_width=config.model.base_width,
                           dtype=jnp.float32)
  expander = models.Expander(config.model.expander)
  rep = jnp.asarray(rng.standard_normal((pairs, models.representation_dim(
      config.model.arch, 1, config.model.base_width)), dtype=np.float32))
  e_vars = expander.init(jax.random.key(0), rep, train=False)

  def trunk(p, x):
    out, _ = backbone.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                            train=True, mutable=["batch_stats"])
    return jnp.sum(out**2)

  def head(p, a, b):
    ea, _ = expander.apply({"params": p, "batch_stats": e_vars["batch_stats"]}, a, train=True,
                           mutable=["batch_stats"])
    eb, _ = expander.apply({"params": p, "batch_stats": e_vars["batch_stats"]}, b, train=True,
                           mutable=["batch_stats"])
    return losses.vicreg_loss(ea, eb, **train.loss_kwargs(config.loss))[0]

  jf = jax.jit(trunk)
  jb = jax.jit(jax.grad(trunk, argnums=(0, 1)))
  hf = jax.jit(head)
  hb = jax.jit(jax.grad(head))
  xt = tstep.views[0].clone().requires_grad_(True)
  rt = [torch.randn(pairs, rep.shape[1], requires_grad=True) for _ in range(2)]
  tb, tp = tstep.backbone, tstep.projector

  def t_trunk_f():
    with torch.no_grad():
      tb(xt)

  def t_trunk_b():
    tb.zero_grad()
    (tb(xt)**2).sum().backward()

  def t_head(backward):
    def run():
      tp.zero_grad()
      if backward:
        torch_vicreg_loss(tp(rt[0]), tp(rt[1]), config.loss).backward()
      else:
        with torch.no_grad():
          torch_vicreg_loss(tp(rt[0]), tp(rt[1]), config.loss)
    return run

  cases = [
      ("trunk forward (one view)", lambda: jf(variables["params"], x).block_until_ready(),
       t_trunk_f),
      ("trunk forward+backward (one view)",
       lambda: jax.block_until_ready(jb(variables["params"], x)), t_trunk_b),
      ("expander x2 + loss forward", lambda: hf(e_vars["params"], rep, rep).block_until_ready(),
       t_head(False)),
      ("expander x2 + loss forward+backward",
       lambda: jax.block_until_ready(hb(e_vars["params"], rep, rep)), t_head(True)),
  ]
  print(f"\n{'part':>36} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>10} {'load':>5}")
  for name, ours, theirs in cases:
    ours()
    theirs()
    o, t = [], []
    for _ in range(repeats):  # interleaved
      o += seconds(ours, 1)
      t += seconds(theirs, 1)
    mo, mt = 1e3 * statistics.median(o), 1e3 * statistics.median(t)
    print(f"{name:>36} {mo:>9.1f} {mt:>9.1f} {mt / mo:>10.2f} {load1():>5.2f}", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/imagenet_resnet50.py:ep100")
  parser.add_argument("--arch", default="resnet50", choices=sorted(CASES))
  parser.add_argument("--expander", default="2048-2048-2048")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--pairs", type=int, default=32, help="view pairs per step")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--channels_last", action="store_true",
                      help="PyTorch in channels_last (the official code uses NCHW)")
  parser.add_argument("--parts", action="store_true",
                      help="also time trunk / expander+loss forward and backward by part")
  parser.add_argument("--only_parts", action="store_true",
                      help="only the parts (no full steps, no compile of the step)")
  parser.add_argument("--nn_conv_everywhere", action="store_true",
                      help="undo models/dot_conv.py (nn.Conv for every layer)")
  args = parser.parse_args()
  if args.nn_conv_everywhere:
    use_nn_conv_everywhere()

  config = load_config_file(args.config)
  config.model.arch = args.arch
  config.model.expander = args.expander
  config.model.dtype = "float32"
  config.augment.image_size = args.image_size
  pairs, size = args.pairs, args.image_size

  tstep = TorchStep(config, pairs, size, args.channels_last)
  print(f"jax {jax.__version__} ({len(jax.devices())} CPU device(s)), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cores")
  print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '') or '(none)'}; convs on maps under "
        f"the kernel and 1x1: {'nn.Conv' if args.nn_conv_everywhere else 'slices + dot'}")
  if args.only_parts:
    config.batch_size = pairs
    model = models.create_model(config.model)
    tx, _ = optim.create_optimizer(config.optim, global_batch=pairs, steps_per_epoch=1000,
                                   total_steps=100_000)
    state = train.create_train_state(config, model, tx, parallel.make_mesh())
    parts(config, state, pairs, size, tstep, args.rounds)
    return
  state, batch, compiled, compile_s, _ = build_ours(config, pairs, size)

  def ours():
    nonlocal state
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)

  first_ours = seconds(ours, 1)[0]
  first_torch = seconds(tstep, 1)[0]
  print(f"{config.model.arch} + {config.model.expander}, {size} px, {pairs} pairs, float32; "
        f"compile {compile_s:.1f} s (ours); first step ours {first_ours:.2f} s, "
        f"torch {first_torch:.2f} s")
  header = f"{'round':>5} {'ours s/step':>11} {'torch s/step':>12} {'torch/ours':>10} {'load':>5}"
  print(header + "\n" + "-" * len(header))
  ratios, o_all, t_all = [], [], []
  for r in range(args.rounds):
    o = statistics.median(seconds(ours, args.steps_per_round))
    t = statistics.median(seconds(tstep, args.steps_per_round))
    ratios.append(t / o)
    o_all.append(o)
    t_all.append(t)
    print(f"{r:>5} {o:>11.3f} {t:>12.3f} {t / o:>10.2f} {load1():>5.2f}", flush=True)
  print(f"median {statistics.median(o_all):>11.3f} {statistics.median(t_all):>12.3f} "
        f"{statistics.median(ratios):>10.2f}   (ratio range {min(ratios):.2f}-{max(ratios):.2f}; "
        f"> 1: ours faster)")
  if args.parts:
    parts(config, state, pairs, size, tstep, args.rounds)


if __name__ == "__main__":
  main()
