"""Test set-up: 8 simulated CPU devices, set before JAX initialises a backend.

A persistent compilation cache (one per test session) lets repeated runs of the same
training program (resume tests, exports) skip XLA compilation.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

NUM_DEVICES = 8
jax.config.update("jax_num_cpu_devices", NUM_DEVICES)
jax.config.update("jax_compilation_cache_dir",
                  tempfile.mkdtemp(prefix="vicreg_jax_test_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
