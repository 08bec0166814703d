"""The CPU XLA options: precedence of XLA_FLAGS / the env var / the default, and their effect."""

import jax
import jax.numpy as jnp
import pytest

from vicreg_jax import cpu_flags


@pytest.fixture(name="cpu_only")
def _cpu_only(monkeypatch):
  monkeypatch.setattr(cpu_flags, "accelerator_installed", lambda: False)


def test_default_on_cpu(cpu_only):
  del cpu_only
  env = {"JAX_PLATFORMS": "cpu"}
  applied = cpu_flags.apply_cpu_xla_flags(env)
  assert env["XLA_FLAGS"] == cpu_flags.DEFAULT_FLAGS == applied.flags
  env = {}  # JAX_PLATFORMS unset, no accelerator plugin: CPU
  assert cpu_flags.apply_cpu_xla_flags(env).flags == cpu_flags.DEFAULT_FLAGS
  assert env["XLA_FLAGS"] == cpu_flags.DEFAULT_FLAGS


def test_users_xla_flags_are_left_alone(cpu_only):
  del cpu_only
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false",
         cpu_flags.ENV_VAR: "--xla_dump_to=/tmp/x"}
  applied = cpu_flags.apply_cpu_xla_flags(env)
  assert env["XLA_FLAGS"] == applied.flags == "--xla_cpu_enable_fast_math=false"


def test_env_var_replaces_or_turns_off(cpu_only):
  del cpu_only
  env = {"JAX_PLATFORMS": "cpu", cpu_flags.ENV_VAR: " --xla_cpu_use_onednn=false "}
  assert cpu_flags.apply_cpu_xla_flags(env).flags == "--xla_cpu_use_onednn=false"
  assert env["XLA_FLAGS"] == "--xla_cpu_use_onednn=false"
  env = {"JAX_PLATFORMS": "cpu", cpu_flags.ENV_VAR: "None"}
  assert cpu_flags.apply_cpu_xla_flags(env).flags == ""
  assert "XLA_FLAGS" not in env


def test_nothing_set_off_cpu(monkeypatch):
  for env in ({"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": "tpu,cpu"}):
    assert cpu_flags.apply_cpu_xla_flags(env).flags == ""
    assert "XLA_FLAGS" not in env
  monkeypatch.setattr(cpu_flags, "accelerator_installed", lambda: True)
  env = {}  # a GPU/TPU plugin may take over: only JAX_PLATFORMS=cpu opts in
  assert cpu_flags.apply_cpu_xla_flags(env).flags == ""
  assert "XLA_FLAGS" not in env
  env = {"JAX_PLATFORMS": "cpu"}
  assert cpu_flags.apply_cpu_xla_flags(env).flags == cpu_flags.DEFAULT_FLAGS


def test_small_input_convolution_is_not_swapped():
  """conftest applies the defaults: a 3x3 convolution on a 2x2 map keeps its operands (the
  swapped form, kernel as input, runs as a slow loop on CPU) and its values."""
  x = jax.random.normal(jax.random.key(0), (4, 2, 2, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
  hlo = conv.lower(x, w).compile().as_text()
  assert "dim_labels=b01f_01io->b01f" in hlo, hlo
  want = jnp.einsum("nhwc,hwcd->nd", jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))[:, :3, :3],
                    w, precision="highest")  # output position (0, 0)
  assert jnp.allclose(conv(x, w)[:, 0, 0], want, rtol=1e-5, atol=1e-5)
