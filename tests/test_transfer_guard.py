"""The training loop moves data between the host and the devices only where it means to."""

import jax

from conftest import tiny_config
from vicreg_jax import train


def test_training_loop_makes_no_implicit_transfers(tmp_path):
  # Every host<->device copy of the loop (metrics, checkpoints, the step counter, the
  # non-finite check) must be an explicit device_put / device_get; an implicit one
  # (int(array), a NumPy or Python number passed to a jitted function) fails here.
  config = tiny_config(num_train_steps=4, log_every_steps=2, transfer_guard="disallow")
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result.finished and int(jax.device_get(result.state.step)) == 4
