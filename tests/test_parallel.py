"""Mesh construction and batch placement on simulated CPU devices."""

import jax
import numpy as np
import pytest

from vicreg_jax import parallel


def test_mesh_spans_all_devices_with_auto_axes():
  mesh = parallel.make_mesh()
  assert mesh.devices.size == jax.device_count() == 8
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_host_to_global_shards_leading_axis():
  mesh = parallel.make_mesh()
  local = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
  out = parallel.host_to_global(mesh, local)
  assert out["x"].shape == (16, 3)
  assert {s.data.shape for s in out["x"].addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(out["x"]), local["x"])


def test_indivisible_batch_names_the_fix():
  with pytest.raises(ValueError, match="multiple of 8"):
    parallel.check_batch_divisible(12, parallel.make_mesh())
