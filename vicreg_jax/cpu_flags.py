"""XLA options for the CPU backend, set in ``XLA_FLAGS`` before JAX starts its backend.

Why: on CPU, XLA's algebraic simplifier swaps the operands of a stride-1 convolution whose
input is spatially smaller than its kernel (a 3x3 convolution on a 2x2 or 1x1 feature map:
ResNet-50's last stage at 64 px, ResNet-18's with the small stem at 16 px). The swapped
convolution has a layout that no fast CPU kernel takes, and runs as a plain loop at 1-5
GFLOP/s instead of 40: the whole training step is dominated by it
(``experiments/compare_torch_cpu.py``; ``experiments/README.md`` has the numbers).
``DEFAULT_FLAGS`` turns the simplifier off, which only changes float rounding.

Precedence (first that applies): your own ``XLA_FLAGS`` (never changed), ``ENV_VAR``
(``none``: add nothing; else the flags to use), ``DEFAULT_FLAGS``. Nothing is set unless
the run is sure to be on CPU: ``JAX_PLATFORMS`` starts with ``cpu``, or it is unset and no
GPU/TPU plugin is installed. Call :func:`apply_cpu_xla_flags` before the first JAX
computation (XLA reads ``XLA_FLAGS`` once, when the backend starts); the command-line
programs, the tests and the benchmark scripts do.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import MutableMapping, NamedTuple

ENV_VAR = "VICREG_JAX_CPU_XLA_FLAGS"
OFF = "none"
# algsimp: XLA's AlgebraicSimplifier (the pass that swaps small-input convolution operands).
DEFAULT_FLAGS = "--xla_disable_hlo_passes=algsimp"
# Packages that give JAX a GPU or TPU backend (then JAX may not run on CPU).
ACCELERATOR_MODULES = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin",
                       "jax_rocm7_plugin")


class Applied(NamedTuple):
  """What :func:`apply_cpu_xla_flags` did: the ``XLA_FLAGS`` now in effect and why."""
  flags: str
  source: str


def accelerator_installed() -> bool:
  """Whether a JAX GPU/TPU plugin is installed (so JAX may pick a backend other than CPU)."""
  if list(importlib.metadata.entry_points(group="jax_plugins")):
    return True
  return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def runs_on_cpu(environ: MutableMapping[str, str]) -> bool:
  """True when JAX will use the CPU backend: ``JAX_PLATFORMS`` starts with ``cpu``, or it is
  unset and no accelerator plugin is installed."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not accelerator_installed()


def apply_cpu_xla_flags(environ: MutableMapping[str, str] | None = None) -> Applied:
  """Sets ``XLA_FLAGS`` in ``environ`` (default ``os.environ``) for a CPU run; see the module
  docstring for the precedence. Returns the flags in effect and where they came from."""
  environ = os.environ if environ is None else environ
  if environ.get("XLA_FLAGS", "").strip():
    return Applied(environ["XLA_FLAGS"], "your XLA_FLAGS, left as they are")
  if not runs_on_cpu(environ):
    return Applied("", "not on CPU (JAX_PLATFORMS or an installed GPU/TPU plugin): none added")
  setting = environ.get(ENV_VAR)
  if setting is not None and setting.strip().lower() == OFF:
    return Applied("", f"{ENV_VAR}={OFF}: none added")
  flags = DEFAULT_FLAGS if setting is None else setting.strip()
  if flags:
    environ["XLA_FLAGS"] = flags
  return Applied(flags, f"${ENV_VAR}" if setting is not None else "vicreg_jax CPU default")
