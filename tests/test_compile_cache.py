"""Compilation: the train step compiles once per run, a resumed run loads it from the
persistent cache, and the command-line programs' cache setting."""

import contextlib
import json
import logging

import jax
import pytest

from conftest import XLA_CACHE_DIR, tiny_config
from vicreg_jax import checkpoint, cli, train


@contextlib.contextmanager
def jax_log():
  """Collects JAX's log messages (with ``jax.log_compiles``: compiles and cache hits)."""
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logger = logging.getLogger("jax")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG)
  try:
    with jax.log_compiles():
      yield messages
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def step_events(messages):
  compiles = [m for m in messages if m.startswith("Compiling jit(train_step)")]
  hits = [m for m in messages if m.startswith("Persistent compilation cache hit for "
                                               "'jit_train_step'")]
  return len(compiles), len(hits)


def test_train_step_compiles_once_and_a_resumed_run_loads_it(tmp_path, monkeypatch):
  config = tiny_config(**{"num_train_steps": 4, "checkpoint.every_steps": 1})

  class StopAfterTwo:
    checks = 0

    def is_set(self):
      StopAfterTwo.checks += 1
      return StopAfterTwo.checks >= 2

  monkeypatch.setattr(train.signals, "graceful_stop",
                      lambda: contextlib.nullcontext(StopAfterTwo()))
  with jax_log() as messages:
    first = train.train_and_evaluate(config, str(tmp_path))
  assert first.step == 2 and not first.finished
  # Two steps, two checkpoints: one compilation of the step (a cache hit if another test
  # compiled the same program before).
  assert step_events(messages)[0] == 1, [m[:120] for m in messages if "train_step" in m]
  monkeypatch.undo()
  with jax_log() as messages:
    resumed = train.train_and_evaluate(config, str(tmp_path))
  assert resumed.finished
  assert step_events(messages) == (1, 1)  # looked up once, and found in the cache


def test_cli_cache_setting(monkeypatch, tmp_path):
  try:
    assert cli.enable_compilation_cache("") is None
    assert jax.config.jax_compilation_cache_dir == XLA_CACHE_DIR  # untouched when off
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert cli.enable_compilation_cache("auto") == str(tmp_path / "env")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.enable_compilation_cache("auto") == str(tmp_path / ".cache/vicreg_jax/xla")
    assert cli.enable_compilation_cache(str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
  finally:
    jax.config.update("jax_compilation_cache_dir", XLA_CACHE_DIR)


def test_resuming_with_another_cache_setting_is_allowed():
  config = tiny_config()
  saved = json.loads(config.to_json())
  saved["compilation_cache_dir"] = "/somewhere/else"
  checkpoint.check_compatible(saved, config, "w")  # accepted
  saved["seed"] = config.seed + 1
  with pytest.raises(ValueError, match="seed"):
    checkpoint.check_compatible(saved, config, "w")
