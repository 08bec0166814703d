"""The pod communication plan: gradient all-reduce size and its computed cost, as tables.

Usage:
  python experiments/pod_communication.py                     # ResNet-50 + 8192-8192-8192
  python experiments/pod_communication.py --config configs/demo.py --pairs_per_chip 32

Counts the parameters of the recipe's model exactly (``jax.eval_shape`` of its ``init``: no
weights are made, no device is needed) and prints, for a data-parallel step with the
parameters replicated:

1. the per-step gradient all-reduce: parameters and bytes in float32 and bfloat16;
2. its cost per chip with a bandwidth-optimal all-reduce, ``2 (N - 1) / N x bytes / B``
   (``B``: the bytes per second one chip can send while it receives as many), on TPU v5p
   ICI, H100 NVLink inside an 8-GPU node, and across nodes hierarchically (NVLink
   reduce-scatter in the node, a ring over 400 Gb/s InfiniBand between nodes on each
   GPU's eighth, NVLink all-gather in the node), against the step's compute time, and the
   weak-scaling efficiency that follows with and without overlap with the backward pass;
3. the optimiser state's bytes per chip, replicated and sharded over the chips as
   ``config.parallel.shard_optimizer_state`` does (ZeRO stage 1; exact, from the shapes).

Every time here is COMPUTED from vendor peak bandwidths (``INTERCONNECTS``), not measured:
real collectives reach less than the peak, so these are lower bounds on the communication
time. The compute time is the one H100 measurement of issue 17 (``--step_ms``); no TPU v5p
step has been measured.
"""

from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vicreg_jax import data, models, optim, parallel
from vicreg_jax.config import load_config_file

GB = 1e9  # bytes; vendor sheets quote decimal units


class Interconnect(NamedTuple):
  """One link family: ``send_gb_s`` is what one chip can send per second (GB/s, 1e9 B) while
  receiving as much, over all of its links of that family."""
  name: str
  send_gb_s: float
  source: str


# TPU v5p: "Interchip Interconnect BW 4,800 Gbps" per chip (Google Cloud TPU v5p
# documentation), counted over both directions of its six 3-D torus links: 2,400 Gb/s =
# 300 GB/s out. Assumes the all-reduce keeps all six links busy (XLA's torus algorithms);
# a single ring along one torus axis would use two links, a third of it.
TPU_V5P_ICI = Interconnect("TPU v5p ICI", 4800 / 8 / 2,
                           "Google Cloud TPU v5p docs: 4,800 Gbps ICI per chip, both ways")
# H100 SXM: "NVLink: 900 GB/s" per GPU (NVIDIA H100 Tensor Core GPU datasheet), both
# directions together: 450 GB/s out, to any GPU of the node through the NVSwitches.
H100_NVLINK = Interconnect("H100 NVLink (in node)", 900 / 2,
                           "NVIDIA H100 datasheet: 900 GB/s NVLink per GPU, both ways")
# InfiniBand NDR: 400 Gb/s per port and direction = 50 GB/s; one ConnectX-7 NDR port per
# GPU, as in an NVIDIA DGX H100 (8 ports for 8 GPUs).
INFINIBAND_NDR = Interconnect("400 Gb/s InfiniBand (NDR)", 400 / 8,
                              "InfiniBand NDR: 400 Gb/s per port per direction, 1 port/GPU")
INTERCONNECTS = (TPU_V5P_ICI, H100_NVLINK, INFINIBAND_NDR)

GPUS_PER_NODE = 8
BYTES = {"float32": 4, "bfloat16": 2}
# Share of a step's compute that is the backward pass (about twice the forward's FLOPs):
# the window that gradient communication can overlap with. An assumption, not measured.
BACKWARD_SHARE = 2 / 3
# Issue 17, measured: 2,448 pairs/s at 256 pairs per H100 -> 256 / 2448 s per step.
H100_MEASURED_STEP_MS = 1e3 * 256 / 2448


def abstract_params(config) -> dict:
  """Shapes and dtypes (``jax.ShapeDtypeStruct``) of ``config.model``'s parameters."""
  model = models.create_model(config.model)
  shape_a, shape_b = data.view_shapes(config, 1)
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape_a), jnp.zeros(shape_b),
                         train=False))["params"]


def count(tree) -> int:
  """Number of elements in a pytree of arrays or shape structs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def state_bytes_per_chip(opt_state, chips: int, min_elements: int) -> int:
  """Bytes of ``opt_state`` (shape structs) on one of ``chips`` chips when its leaves are
  split as :func:`vicreg_jax.parallel.sharded_axis` says (``chips=1``: replicated)."""
  total = 0
  for leaf in jax.tree.leaves(opt_state):
    split = chips if parallel.sharded_axis(leaf.shape, chips, min_elements) is not None else 1
    total += math.prod(leaf.shape) * leaf.dtype.itemsize // split
  return total


def allreduce_ms(nbytes: float, chips: int, send_gb_s: float) -> float:
  """Milliseconds of a bandwidth-optimal all-reduce of ``nbytes`` over ``chips`` chips."""
  return 1e3 * 2 * (chips - 1) / chips * nbytes / (send_gb_s * GB)


def reduce_scatter_ms(nbytes: float, chips: int, send_gb_s: float) -> float:
  """Milliseconds of a reduce-scatter (or all-gather) of ``nbytes`` over ``chips`` chips."""
  return allreduce_ms(nbytes, chips, send_gb_s) / 2


def h100_allreduce_ms(nbytes: float, gpus: int) -> float:
  """All-reduce over ``gpus`` H100s: NVLink alone in one node, else hierarchical (NVLink
  reduce-scatter, InfiniBand all-reduce of each GPU's 1/8 across nodes, NVLink all-gather)."""
  in_node = min(gpus, GPUS_PER_NODE)
  if gpus <= GPUS_PER_NODE:
    return allreduce_ms(nbytes, in_node, H100_NVLINK.send_gb_s)
  nodes = gpus // GPUS_PER_NODE
  return (2 * reduce_scatter_ms(nbytes, in_node, H100_NVLINK.send_gb_s)
          + allreduce_ms(nbytes / in_node, nodes, INFINIBAND_NDR.send_gb_s))


def efficiency(compute_ms: float, comm_ms: float, overlap: bool) -> float:
  """Weak-scaling efficiency: compute time / step time. With overlap, communication hides
  behind the backward pass (``BACKWARD_SHARE`` of the compute) and only the rest shows."""
  exposed = max(0.0, comm_ms - BACKWARD_SHARE * compute_ms) if overlap else comm_ms
  return compute_ms / (compute_ms + exposed)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/imagenet_resnet50.py:ep100")
  parser.add_argument("--pairs_per_chip", type=int, default=256)
  parser.add_argument("--step_ms", type=float, default=H100_MEASURED_STEP_MS,
                      help="compute ms per step at --pairs_per_chip (default: the H100 "
                           "measurement of issue 17, 2,448 pairs/s at 256 pairs)")
  parser.add_argument("--chips", default="8,64,256")
  args = parser.parse_args()
  config = load_config_file(args.config)
  chips = [int(n) for n in args.chips.split(",")]

  params = abstract_params(config)
  n_params = count(params)
  print(f"Model: {config.model.arch} + expander {config.model.expander} "
        f"({args.config}); {args.pairs_per_chip} pairs per chip.\n")
  print("| gradient all-reduce per step | parameters | float32 | bfloat16 |")
  print("|---|---|---|---|")
  for name, tree in (*sorted(params.items()), ("whole model", params)):
    n = count(tree)
    print(f"| {name} | {n:,} | {n * 4 / 1e6:,.1f} MB | {n * 2 / 1e6:,.1f} MB |")
  print()

  print("Bandwidths (per chip, out; vendor peak figures):")
  for link in INTERCONNECTS:
    print(f"- {link.name}: {link.send_gb_s:.0f} GB/s ({link.source})")
  print(f"\nCOMPUTED all-reduce time per step (peak bandwidth; not measured) against "
        f"{args.step_ms:.1f} ms of compute (H100, measured; TPU v5p: not measured, the H100 "
        f"figure stands in). Overlap: hidden behind the backward pass, "
        f"{BACKWARD_SHARE:.2f} of the step (assumed).\n")
  print("| interconnect | chips | gradients | all-reduce ms | efficiency, no overlap | "
        "efficiency, overlap (bound) |")
  print("|---|---|---|---|---|---|")
  rows = []
  for n in chips:
    rows.append(("TPU v5p ICI", n, lambda b, n=n: allreduce_ms(b, n, TPU_V5P_ICI.send_gb_s)))
  for n in chips:
    name = "H100 NVLink" if n <= GPUS_PER_NODE else "H100 NVLink + IB NDR (hierarchical)"
    rows.append((name, n, lambda b, n=n: h100_allreduce_ms(b, n)))
  for name, n, cost in rows:
    for dtype, width in BYTES.items():
      ms = cost(n_params * width)
      print(f"| {name} | {n} | {dtype} | {ms:.2f} | "
            f"{100 * efficiency(args.step_ms, ms, overlap=False):.1f}% | "
            f"{100 * efficiency(args.step_ms, ms, overlap=True):.1f}% |")

  tx, _ = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                 steps_per_epoch=1, total_steps=1)
  opt_state = jax.eval_shape(tx.init, params)
  min_elements = config.parallel.shard_min_elements
  replicated = state_bytes_per_chip(opt_state, 1, min_elements)
  print(f"\nOptimiser state ({config.optim.name}) per chip, exact from the shapes; sharded: "
        f"leaves of >= {min_elements} elements split (parallel.shard_min_elements).\n")
  print("| chips | replicated | sharded (shard_optimizer_state=True) |")
  print("|---|---|---|")
  for n in chips:
    print(f"| {n} | {replicated / 1e6:,.1f} MB | "
          f"{state_bytes_per_chip(opt_state, n, min_elements) / 1e6:,.2f} MB |")


if __name__ == "__main__":
  main()
