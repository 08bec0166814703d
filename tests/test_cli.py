"""The pretraining CLI as a user meets it: one-line errors, real SIGINT/SIGTERM at any moment,
what it prints, reruns of finished or changed runs."""

import json
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import SUBPROCESS_TIMEOUT as TIMEOUT, cli_env, complete_steps, main_cmd, run_main

STEP_LINE = "step {}/"


@pytest.mark.parametrize("flag,message", [
    ("--config.optim.base_lrr=1", "--config.optim.base_lrr: unknown key 'base_lrr'; did you "
     "mean 'base_lr'?"),
    ("--config=configs/nope.py", "no such recipe file 'configs/nope.py'"),
    ("--config.model.base_width=0", "--config.model.base_width=0"),
    ("--config.batch_size=1", "--config.batch_size=1"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, flag, message):
  result = run_main(tmp_path / "w", flag)
  assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
  assert "vicreg_jax/config.py" in result.stderr or "unknown key" not in message
  assert not (tmp_path / "w").exists()


def test_help_exits_0_and_names_where_config_keys_are(tmp_path):
  result = run_main(tmp_path, "--help")
  assert result.returncode == 0 and "vicreg_jax/config.py" in result.stdout


def start(workdir, *flags, cache=True):
  if not cache:  # neither the tests' cache nor the CLI's default one
    flags = (*flags, "--config.compilation_cache_dir=")
  return subprocess.Popen(main_cmd(workdir, *flags), env=cli_env(1, cache), cwd=pathlib.Path(
      __file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def read_until(proc, text):
  """Reads stdout lines until one contains ``text``; returns the lines read."""
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if text in line:
      return lines
  raise AssertionError(f"{text!r} never printed: {lines} {proc.stderr.read()[-2000:]}")


def test_ctrl_c_while_compiling_exits_at_once_in_one_line(tmp_path):
  proc = start(tmp_path, cache=False)  # no cache: compiling takes seconds
  read_until(proc, "Loading data")
  time.sleep(1.0)  # building the state: compiling its initialiser
  sent = time.perf_counter()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=TIMEOUT)
  print(f"exit {time.perf_counter() - sent:.2f} s after SIGINT")
  assert proc.returncode == 130 and err.strip() == "SIGINT: exiting at once.", err[-2000:]
  assert not (tmp_path / "run.lock").exists() and not complete_steps(tmp_path)


# One step compilation shared by the tests below (the run length is part of the step).
STEPS = ["--config.num_train_steps=30", "--config.log_every_steps=10"]
LONG = [*STEPS, "--config.checkpoint.every_steps=1000", "--config.eval.compare_random=True"]


# The pretraining CLI, sending itself a real SIGINT right after step 10's progress line.
# (A SIGINT sent by the test after reading that line lands a variable number of steps later:
# tiny steps take milliseconds and the reader may wait for a busy core; seen: step 13.)
SIGINT_AT_STEP_10 = """
import os, runpy, signal, sys
from vicreg_jax import metrics
line = metrics.Progress.line
def line_then_sigint(self, step, *args, **kwargs):
  if step == 10:
    os.kill(os.getpid(), signal.SIGINT)
  return line(self, step, *args, **kwargs)
metrics.Progress.line = line_then_sigint
sys.argv = ["vicreg_jax.main", *sys.argv[1:]]
runpy.run_module("vicreg_jax.main", run_name="__main__")
"""


def test_stop_takes_effect_at_the_next_step_and_skips_evaluation(tmp_path):
  python, _, _, *args = main_cmd(tmp_path, *LONG)
  proc = subprocess.Popen([python, "-c", SIGINT_AT_STEP_10, *args], env=cli_env(1),
                          cwd=pathlib.Path(__file__).resolve().parent.parent,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, err = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 0, err[-2000:]
  stopped = complete_steps(tmp_path)[-1]
  print(f"SIGINT at step 10 stopped at step {stopped}")
  assert stopped in (11, 12)  # the step dispatched when it arrived (at most one ahead)
  assert f"Stopped at step {stopped} of 30: no evaluation and no export" in out
  assert "rerun the same command to resume" in err
  assert not (tmp_path / "eval.json").exists() and not (tmp_path / "export").exists()
  # Resumed, then a second signal exits at once instead of waiting for the checkpoint.
  proc = start(tmp_path, *LONG)
  lines = read_until(proc, STEP_LINE.format(20))
  assert any(f"Restoring step {stopped}" in line for line in lines), lines
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGTERM)  # a second SIGINT sent at once could merge with the first
  _, err = proc.communicate(timeout=TIMEOUT)  # the two may arrive in either order
  assert proc.returncode in (130, 143) and "second stop signal, exiting at once" in err, err

  assert not (tmp_path / "run.lock").exists()


def test_finished_run_is_not_redone_and_a_changed_model_is_refused_before_compiling(
    tmp_path):
  first = run_main(tmp_path, *STEPS)
  assert first.returncode == 0, first.stderr[-2000:]
  assert f"backbone: {tmp_path}/export" in first.stdout
  exported = (tmp_path / "export" / "backbone.msgpack").stat().st_mtime_ns
  again = run_main(tmp_path, *STEPS)
  assert again.returncode == 0 and "Already finished at step 30" in again.stdout
  assert (tmp_path / "export" / "backbone.msgpack").stat().st_mtime_ns == exported
  changed = run_main(tmp_path, *STEPS, "--config.model.base_width=8")
  assert changed.returncode != 0 and "config.model.base_width: 4 -> 8" in changed.stderr
  assert "Compiling" not in changed.stdout and "Loading data" not in changed.stdout
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [10, 20, 30]
