"""Resume policy: which config changes a resumed run refuses, damaged checkpoints set aside,
no silent restart when every checkpoint is unreadable, superseded metric lines dropped."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vicreg_jax import checkpoint, metrics, parallel

demo_config = tiny_config


def saved(**overrides):
  return json.loads(demo_config(**overrides).to_json())


@pytest.mark.parametrize("key,value", [
    ("batch_size", 32), ("optim.base_lr", 0.4), ("optim.weight_decay", 1e-5),
    ("data.name", "npz"), ("seed", 1), ("augment.view_b.solarize_prob", 0.0),
    ("loss.std_coeff", 10.0), ("model.arch", "resnet34"),
])
def test_resume_refuses_a_changed_trajectory_naming_only_the_changed_key(key, value):
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match=f"config.{key}") as err:
    checkpoint.check_compatible(saved(), demo_config(**{key: value}), "W")
  assert str(err.value).count("->") == 1  # only the key that differs, not whole configs


@pytest.mark.parametrize("key,value", [
    ("checkpoint.every_steps", 7), ("log_every_steps", 1), ("eval.linear.epochs", 3),
    ("distributed.mode", "auto"), ("data.device_prefetch", 0), ("nonfinite", "skip"),
])
def test_resume_accepts_settings_that_do_not_change_the_trajectory(key, value, caplog):
  checkpoint.check_compatible(saved(), demo_config(**{key: value}), "W")
  assert "changed" not in caplog.text


def test_resume_accepts_a_changed_run_length_and_logs_it(caplog):
  checkpoint.check_compatible(saved(), demo_config(num_train_steps=60), "W")
  assert "config.num_train_steps: 6 -> 60" in caplog.text


def _manager(tmp_path, steps):
  manager = checkpoint.create_manager(str(tmp_path), demo_config().checkpoint)
  state = {"w": jnp.arange(4.0)}
  for step in steps:
    checkpoint.save(manager, step, {"w": state["w"] + step}, demo_config(), force=True)
  manager.wait_until_finished()
  return manager, state


def _damage(tmp_path, step):
  for f in (tmp_path / checkpoint.CHECKPOINT_DIR / str(step) / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":  # OCDBT data files
      f.unlink()


def test_damaged_newest_step_is_set_aside_and_the_older_one_resumed(tmp_path, caplog):
  manager, target = _manager(tmp_path, [2, 4])
  _damage(tmp_path, 4)
  state, step = checkpoint.restore_latest(manager, target, demo_config(), str(tmp_path))
  assert step == 2 and np.array_equal(np.asarray(state["w"]), np.arange(4.0) + 2)
  assert "step 4" in caplog.text and "unreadable" in caplog.text
  assert (tmp_path / checkpoint.DAMAGED_DIR / "4").is_dir()
  assert manager.all_steps() == [2]
  # The resumed run is protected again at once: the next save is not refused.
  assert checkpoint.save(manager, 3, target, demo_config(), force=True)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]
  manager.close()


def test_every_checkpoint_unreadable_refuses_to_start_over(tmp_path):
  manager, target = _manager(tmp_path, [2, 4])
  _damage(tmp_path, 2)
  _damage(tmp_path, 4)
  with pytest.raises(checkpoint.DamagedCheckpointsError, match="step 4.*step 2.*mv "):
    checkpoint.restore_latest(manager, target, demo_config(), str(tmp_path))
  assert sorted(manager.all_steps()) == [2, 4]  # nothing moved or deleted
  manager.close()


def test_metric_lines_after_the_resumed_step_are_dropped(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6, 8)))
  writer = metrics.MetricWriter(str(tmp_path), start_step=4)
  writer.write(5, {"loss": 0.5})
  writer.close()
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
  assert steps == [2, 4, 5]


def test_restoring_a_damaged_step_for_evaluation_names_the_older_steps(tmp_path):
  manager, target = _manager(tmp_path, [2, 4])
  manager.close()
  _damage(tmp_path, 4)
  with pytest.raises(checkpoint.DamagedCheckpointsError,
                     match=r"step 4 .* unreadable .*--step .*\[2\]"):
    checkpoint.restore_variables(str(tmp_path), None, parallel.make_mesh())
